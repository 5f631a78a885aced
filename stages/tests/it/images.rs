//! The image stages (partition, mkfs, convert) on small images, with the
//! host's sfdisk, mkfs.ext4, debugfs, mkfs.vfat, mtools, mkswap and qemu-img,
//! checked by reading the image back with the same tools.

use super::*;

const PARTITION: &str = env!("CARGO_BIN_EXE_strata-stage-partition");
const MKFS: &str = env!("CARGO_BIN_EXE_strata-stage-mkfs");
const CONVERT: &str = env!("CARGO_BIN_EXE_strata-stage-convert");
const MIB: u64 = 1 << 20;

fn layout_options() -> Value {
    json!({"size": "200M", "partitions": [
        {"name": "esp", "size": "40M", "filesystem": "vfat", "mountpoint": "/boot/efi"},
        {"name": "swap", "size": "16M", "filesystem": "swap"},
        {"size": "8M", "filesystem": "freespace"},
        {"name": "root", "filesystem": "ext4", "mountpoint": "/"}]})
}

/// A little system with an ESP folder, as the bootloader stage leaves it.
fn fill_system(dir: &Path) {
    for d in [
        "etc",
        "boot/efi/EFI/BOOT",
        "boot/efi/loader/entries",
        "usr/bin",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("etc/hostname"), "imagebox\n").unwrap();
    std::fs::write(dir.join("boot/efi/EFI/BOOT/BOOTX64.EFI"), b"MZ not really").unwrap();
    std::fs::write(dir.join("boot/efi/loader/entries/debian.conf"), "title x\n").unwrap();
    std::os::unix::fs::symlink("../etc/hostname", dir.join("usr/bin/link")).unwrap();
}

/// partition, then mkfs for each partition; the image's path.
fn make_image(s: &mut Stage) -> PathBuf {
    s.epoch = Some(1_700_000_000);
    fill_system(&s.input("tree"));
    ok(&s.run(PARTITION, layout_options()));
    ok(&s.run(
        MKFS,
        json!({"partition": "esp", "type": "vfat", "path": "/boot/efi", "label": "ESP"}),
    ));
    ok(&s.run(MKFS, json!({"partition": "swap", "type": "swap"})));
    ok(&s.run(
        MKFS,
        json!({"partition": "root", "type": "ext4", "exclude": ["/boot/efi"], "label": "root"}),
    ));
    s.tree().join("disk.raw")
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The bytes `start..start+size` of `image` as a file of their own.
fn cut(image: &Path, start: u64, size: u64, to: &Path) {
    let data = std::fs::read(image).unwrap();
    std::fs::write(to, &data[start as usize..(start + size) as usize]).unwrap();
}

#[test]
fn a_gpt_with_three_filesystems_is_made_on_a_file() {
    let mut s = Stage::new();
    let image = make_image(&mut s);
    let img = image.to_str().unwrap();

    let table: Value = serde_json::from_str(&tool("sfdisk", &["--json", img])).unwrap();
    let t = &table["partitiontable"];
    assert_eq!(t["label"], "gpt");
    let parts = t["partitions"].as_array().unwrap();
    let got: Vec<(u64, u64, String, String)> = parts
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
                p["type"].as_str().unwrap().to_ascii_lowercase(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                MIB,
                40 * MIB,
                "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".into(),
                "esp".into()
            ),
            (
                41 * MIB,
                16 * MIB,
                "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f".into(),
                "swap".into()
            ),
            // 8 MiB of free space before the root, which takes the rest.
            (
                65 * MIB,
                134 * MIB,
                "4f68bce3-e8cd-4db1-96e7-fbcaf984b709".into(),
                "root".into()
            ),
        ]
    );
    // The layout beside the image says the same, with the uuids.
    let layout: Value =
        serde_json::from_slice(&std::fs::read(s.tree().join("disk.raw.json")).unwrap()).unwrap();
    for (i, p) in parts.iter().enumerate() {
        let l = &layout["partitions"][i];
        assert_eq!(p["uuid"].as_str().unwrap().to_ascii_lowercase(), l["uuid"]);
        assert_eq!(p["start"].as_u64().unwrap() * 512, l["start"]);
    }
    assert_eq!(
        t["id"].as_str().unwrap().to_ascii_lowercase(),
        layout["disk_guid"]
    );

    let probe = |offset: u64| {
        tool(
            "blkid",
            &["-p", "-o", "export", "-O", &offset.to_string(), img],
        )
    };
    let esp = probe(MIB);
    assert!(
        esp.contains("TYPE=vfat") && esp.contains("LABEL=ESP"),
        "{esp}"
    );
    let swap = probe(41 * MIB);
    assert!(swap.contains("TYPE=swap"), "{swap}");
    let root = probe(65 * MIB);
    assert!(
        root.contains("TYPE=ext4") && root.contains("LABEL=root"),
        "{root}"
    );

    // The root has the system, but not what belongs to the ESP.
    let on_root = format!("{img}?offset={}", 65 * MIB);
    assert_eq!(
        tool("debugfs", &["-R", "cat /etc/hostname", &on_root]),
        "imagebox\n"
    );
    let efi = tool("debugfs", &["-R", "ls -p /boot/efi", &on_root]);
    assert_eq!(
        efi.lines().filter(|l| !l.is_empty()).count(),
        2,
        "only . and ..: {efi}"
    );
    let link = tool("debugfs", &["-R", "stat /usr/bin/link", &on_root]);
    assert!(
        link.contains("Fast link dest: \"../etc/hostname\""),
        "{link}"
    );
    assert!(
        link.contains("ctime: 0x6553f100"),
        "times are the epoch: {link}"
    );

    // The ESP has the ESP folder's files.
    let at = format!("{img}@@{MIB}");
    let entry = Command::new("mtype")
        .args(["-i", &at, "::/loader/entries/debian.conf"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&entry.stdout), "title x\n");

    // Both filesystems check clean.
    let dir = tempfile::tempdir().unwrap();
    cut(&image, 65 * MIB, 134 * MIB, &dir.path().join("root"));
    tool(
        "e2fsck",
        &["-fn", dir.path().join("root").to_str().unwrap()],
    );
    cut(&image, MIB, 40 * MIB, &dir.path().join("esp"));
    tool(
        "fsck.vfat",
        &["-n", dir.path().join("esp").to_str().unwrap()],
    );

    // The image stays sparse: the free space and unwritten blocks take nothing.
    let used = std::fs::metadata(&image).unwrap().blocks() * 512;
    assert!(used < 100 * MIB, "{used} bytes used of 200 MiB");
}

#[test]
fn the_same_inputs_give_the_same_image() {
    let (mut a, mut b) = (Stage::new(), Stage::new());
    let one = std::fs::read(make_image(&mut a)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let two = std::fs::read(make_image(&mut b)).unwrap();
    let differ: Vec<usize> = (0..one.len())
        .filter(|&i| one[i] != two[i])
        .take(8)
        .collect();
    assert!(
        differ.is_empty(),
        "two builds of one image differ at bytes {differ:?}"
    );
}

#[test]
fn a_raw_image_converts_to_qcow2() {
    let mut made = Stage::new();
    let image = make_image(&mut made);
    let mut s = Stage::new();
    let input = s.input("tree");
    std::fs::copy(&image, input.join("disk.raw")).unwrap();
    ok(&s.run(
        CONVERT,
        json!({"filename": "disk.qcow2", "compression": true}),
    ));
    let qcow = s.tree().join("disk.qcow2");
    let info: Value = serde_json::from_str(&tool(
        "qemu-img",
        &["info", "--output=json", qcow.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 200 * MIB);
    tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            image.to_str().unwrap(),
            qcow.to_str().unwrap(),
        ],
    );
    assert_eq!(s.meta()["format"], "qcow2");
}

#[test]
fn bad_options_are_named() {
    let mut s = Stage::new();
    s.input("tree");
    let e = error(&s.run(
        PARTITION,
        json!({"size": "10M", "partitions": [{"filesystem": "ext4", "size": "20M"}]}),
    ));
    assert!(
        e.contains("options.partitions[0]: 20971520 bytes at offset 1048576 do not fit"),
        "{e}"
    );
    let e = error(&s.run(MKFS, json!({"partition": "root", "type": "ext4"})));
    assert!(e.contains("cannot read the layout"), "{e}");
    ok(&s.run(PARTITION, layout_options()));
    let e = error(&s.run(MKFS, json!({"partition": "root", "type": "vfat"})));
    assert!(
        e.contains("options.type: partition \"root\" was laid out for ext4, not vfat"),
        "{e}"
    );
    let e = error(&s.run(MKFS, json!({"partition": "home", "type": "ext4"})));
    assert!(
        e.contains("disk.raw has no partition \"home\" (it has: esp, swap, root)"),
        "{e}"
    );
    let e = error(&s.run(
        CONVERT,
        json!({"filename": "x.qcow2", "source": "nope.raw"}),
    ));
    assert!(
        e.contains("options.source: input://tree/nope.raw does not exist"),
        "{e}"
    );
}
