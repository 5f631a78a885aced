//! Bootable disk images from the image stages, run by strata for real: a
//! minbase system with systemd, made bootable by the bootloader stage, laid
//! out by partition, written by mkfs into a sparse raw image, converted to
//! qcow2, and booted under qemu (TCG) with OVMF to a login prompt.
//!
//! The image stages run in the build root, which here is the host's /usr
//! (no build pipeline): sfdisk, e2fsprogs, dosfstools, mtools and qemu-utils
//! come from `make deps`. The bootloader stage installs the kernel from the
//! mirror in this machine's apt sources.

use crate::support::{Env, require};
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const EPOCH: u64 = 1_700_000_000;
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

fn partition_stage() -> Value {
    json!({
        "type": "partition",
        "options": {
            "size": "2G",
            "partitions": [
                {"name": "esp", "size": "100M", "filesystem": "vfat", "mountpoint": "/boot/efi"},
                {"name": "swap", "size": "64M", "filesystem": "swap"},
                {"size": "64M", "filesystem": "freespace"},
                {"name": "root", "filesystem": "ext4", "mountpoint": "/"}
            ]
        }
    })
}

fn tree_input(pipeline: &str) -> Value {
    json!({"type": "tree", "origin": "pipeline", "references": [format!("name:{pipeline}")]})
}

/// disk: the partition table alone, whose layout the bootloader reads;
/// system: minbase + systemd, made bootable; image: the same partition
/// stage (the same id, so stored once), then swap, ESP and root, the ESP
/// and root filled from system; qcow2: the image converted.
fn manifest(cmdline: &str) -> Value {
    let pipeline = |name: &str, stages: Value| json!({"name": name, "runner": "debian", "source-epoch": EPOCH, "stages": stages});
    json!({
        "version": "2",
        "pipelines": [
            pipeline("disk", json!([partition_stage()])),
            pipeline("system", json!([
                {"type": "bootstrap", "options": {
                    "bootstrap_options": {"architecture": "amd64", "variant": "minbase",
                                          "extra_packages": ["systemd-sysv"]},
                    "bootstrap_repositories": [{"suite": "bookworm", "components": ["main"]}]}},
                {"type": "bootloader",
                 "inputs": {"disk": tree_input("disk")},
                 "options": {"kernel_cmdline": cmdline}}
            ])),
            pipeline("image", json!([
                partition_stage(),
                {"type": "mkfs", "options": {"partition": "swap", "type": "swap"}},
                {"type": "mkfs", "inputs": {"tree": tree_input("system")},
                 "options": {"partition": "esp", "type": "vfat", "path": "/boot/efi", "label": "ESP"}},
                {"type": "mkfs", "inputs": {"tree": tree_input("system")},
                 "options": {"partition": "root", "type": "ext4", "exclude": ["/boot/efi"], "label": "root"}}
            ])),
            pipeline("qcow2", json!([
                {"type": "convert", "inputs": {"tree": tree_input("image")},
                 "options": {"filename": "disk.qcow2"}}
            ])),
        ]
    })
}

fn build(env: &Env, m: &Value) -> Value {
    let out = env.out();
    let (run, doc) = env.build_json(
        m,
        &[
            "--force",
            "--export",
            "image",
            "--export",
            "qcow2",
            "--output-directory",
            out.to_str().unwrap(),
        ],
    );
    run.success();
    doc
}

/// "pipeline/type[index]" -> status, for every stage of the build.
fn statuses(doc: &Value) -> Vec<(String, String)> {
    doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["stages"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .map(move |(i, s)| {
                    (
                        format!(
                            "{}/{}[{i}]",
                            p["name"].as_str().unwrap(),
                            s["type"].as_str().unwrap()
                        ),
                        s["status"].as_str().unwrap().to_owned(),
                    )
                })
        })
        .collect()
}

fn metadata<'a>(doc: &'a Value, pipeline: &str, index: usize) -> &'a Value {
    let p = doc["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pipeline)
        .unwrap();
    &p["stages"][index]["metadata"]
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (start, size, type, name) of each partition, from `sfdisk --json`.
fn table(image: &Path) -> Vec<(u64, u64, String, String)> {
    let doc: Value =
        serde_json::from_str(&tool("sfdisk", &["--json", image.to_str().unwrap()])).unwrap();
    assert_eq!(doc["partitiontable"]["label"], "gpt");
    doc["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
                p["type"].as_str().unwrap().to_ascii_lowercase(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Bytes a file takes on disk (its data, holes left out).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Boots `image` (raw, not written: -snapshot) under qemu with OVMF and
/// waits for a login prompt on the serial console; what it printed.
fn boot_to_login(env: &Env, image: &Path, within: Duration) -> Result<String, String> {
    let vars = env.path("OVMF_VARS_4M.fd");
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-nographic",
            "-snapshot",
        ])
        .args([
            "-drive",
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", image.display()))
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Chunks, not lines: the prompt ("localhost login: ") ends no line.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut seen = String::new();
    let found = loop {
        let left = within.saturating_sub(start.elapsed());
        match rx.recv_timeout(left.min(Duration::from_secs(5))) {
            Ok(chunk) => {
                seen.push_str(&chunk);
                if seen.contains(" login: ") {
                    break true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if left.is_zero() => break false,
            Err(_) => {}
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    if found { Ok(seen) } else { Err(seen) }
}

#[test]
fn images_a_disk_image_is_laid_out_bootable_reproducible_and_rebuilt_in_part() {
    for program in [
        "sfdisk",
        "mkfs.ext4",
        "debugfs",
        "mkfs.vfat",
        "mcopy",
        "mkswap",
        "qemu-img",
        "blkid",
    ] {
        require(program);
    }
    let env = Env::new();
    let m = manifest("console=tty0 console=ttyS0");
    let doc = build(&env, &m);
    let statuses_a = statuses(&doc);
    // The partition stage is one object, made once, whichever pipeline ran it first.
    let partitions: Vec<&str> = statuses_a
        .iter()
        .filter(|(s, _)| s.ends_with("/partition[0]"))
        .map(|(_, st)| st.as_str())
        .collect();
    assert!(
        partitions.contains(&"cached") || partitions.len() == 1,
        "{statuses_a:?}"
    );

    let raw = env.out().join("image/disk.raw");
    let layout = metadata(&doc, "disk", 0);
    let uuid = |i: usize| layout["partitions"][i]["uuid"].as_str().unwrap().to_owned();
    assert_eq!(
        table(&raw),
        [
            (MIB, 100 * MIB, ESP.into(), "esp".into()),
            (101 * MIB, 64 * MIB, SWAP.into(), "swap".into()),
            // 64 MiB free, then the root to the end (less the backup GPT, aligned).
            (
                229 * MIB,
                2047 * MIB - 229 * MIB,
                ROOT_X86_64.into(),
                "root".into()
            ),
        ]
    );

    let img = raw.to_str().unwrap();
    let probe = |offset: u64| {
        tool(
            "blkid",
            &["-p", "-o", "export", "-O", &offset.to_string(), img],
        )
    };
    assert!(probe(MIB).contains("TYPE=vfat"), "{}", probe(MIB));
    assert!(
        probe(101 * MIB).contains("TYPE=swap"),
        "{}",
        probe(101 * MIB)
    );
    let root_probe = probe(229 * MIB);
    assert!(
        root_probe.contains("TYPE=ext4") && root_probe.contains("LABEL=root"),
        "{root_probe}"
    );

    // The root has the system and an fstab of the layout's PARTUUIDs; its
    // /boot/efi is an empty mount point.
    let on_root = format!("{img}?offset={}", 229 * MIB);
    let fstab = tool("debugfs", &["-R", "cat /etc/fstab", &on_root]);
    assert!(
        fstab.contains(&format!("PARTUUID={}\t/\text4", uuid(2))),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("PARTUUID={}\t/boot/efi\tvfat", uuid(0))),
        "{fstab}"
    );
    assert!(
        fstab.contains(&format!("PARTUUID={}\tnone\tswap", uuid(1))),
        "{fstab}"
    );
    let efi = tool("debugfs", &["-R", "ls -p /boot/efi", &on_root]);
    assert_eq!(efi.lines().filter(|l| !l.is_empty()).count(), 2, "{efi}");
    assert!(tool("debugfs", &["-R", "stat /sbin/init", &on_root]).contains("Type: symlink"));

    // The ESP has systemd-boot, the kernel and an entry booting the root.
    let esp = format!("{img}@@{MIB}");
    let entry = tool("mtype", &["-i", &esp, "::/loader/entries/debian.conf"]);
    assert!(
        entry.contains(&format!(
            "options root=PARTUUID={} ro console=tty0 console=ttyS0",
            uuid(2)
        )),
        "{entry}"
    );
    let listing = tool("mdir", &["-i", &esp, "-/", "-b", "::/"]);
    for want in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/debian/vmlinuz",
        "::/debian/initrd.img",
    ] {
        assert!(listing.contains(want), "{want} not on the ESP: {listing}");
    }

    // qcow2 of the same disk.
    let qcow = env.out().join("qcow2/disk.qcow2");
    let info: Value = serde_json::from_str(&tool(
        "qemu-img",
        &["info", "--output=json", qcow.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2");
    tool(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "qcow2",
            img,
            qcow.to_str().unwrap(),
        ],
    );

    // What a sparse image costs, stored and exported (the report's finding).
    let stored: Vec<(String, u64)> = walk_files(&env.store().join("objects"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "disk.raw"))
        .map(|p| (p.display().to_string(), allocated(&p)))
        .collect();
    eprintln!(
        "disk.raw: 2 GiB apparent; exported takes {} MiB; stored layers: {:?} (bytes allocated)",
        allocated(&raw) / MIB,
        stored
    );
    assert!(
        allocated(&raw) < std::fs::metadata(&raw).unwrap().len(),
        "the export is not sparse"
    );

    if crate::support::on_path("qemu-system-x86_64").is_some()
        && Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd").exists()
    {
        match boot_to_login(&env, &raw, Duration::from_secs(300)) {
            Ok(seen) => assert!(seen.contains("Debian GNU/Linux 12"), "{seen}"),
            Err(seen) => panic!("no login prompt on the serial console:\n{seen}"),
        }
    }

    // Only the kernel command line changes: the bootloader stage and what
    // follows from it run again; the bootstrap, the partition table and
    // the swap are taken from the store.
    let doc2 = build(&env, &manifest("console=ttyS0 quiet"));
    let st: std::collections::BTreeMap<String, String> = statuses(&doc2).into_iter().collect();
    let expect = [
        ("disk/partition[0]", "cached"),
        ("system/bootstrap[0]", "cached"),
        ("system/bootloader[1]", "built"),
        ("image/partition[0]", "cached"),
        ("image/mkfs[1]", "cached"),
        ("image/mkfs[2]", "built"),
        ("image/mkfs[3]", "built"),
        ("qcow2/convert[0]", "built"),
    ];
    for (stage, status) in expect {
        assert_eq!(
            st.get(stage).map(String::as_str),
            Some(status),
            "{stage}: {st:?}"
        );
    }
    let entry = tool("mtype", &["-i", &esp, "::/loader/entries/debian.conf"]);
    assert!(entry.contains("ro console=ttyS0 quiet\n"), "{entry}");

    // A second cold build, in another store, gives the same bytes.
    let env2 = Env::new();
    let doc_b = build(&env2, &m);
    let same_inputs = metadata(&doc, "system", 1)["kernel_version"]
        == metadata(&doc_b, "system", 1)["kernel_version"]
        && metadata(&doc, "system", 0)["packages"] == metadata(&doc_b, "system", 0)["packages"];
    if !same_inputs {
        eprintln!("the mirror moved between the two builds; not comparing bytes");
        return;
    }
    let b_raw = env2.out().join("image/disk.raw");
    assert_eq!(
        statuses(&doc_b)
            .iter()
            .filter(|(_, s)| s == "built")
            .count(),
        statuses_a.iter().filter(|(_, s)| s == "built").count()
    );
    // The first store's export was overwritten by the cmdline rebuild;
    // rebuild the original there from its cache (nothing runs).
    let doc_a2 = build(&env, &m);
    assert!(
        statuses(&doc_a2).iter().all(|(_, s)| s == "cached"),
        "{:?}",
        statuses(&doc_a2)
    );
    assert!(
        files_equal(&raw, &b_raw),
        "two cold builds with one source-epoch give different raw images"
    );
    assert!(
        files_equal(&qcow, &env2.out().join("qcow2/disk.qcow2")),
        "qcow2 images differ"
    );
}

fn files_equal(a: &Path, b: &Path) -> bool {
    let status = Command::new("cmp")
        .arg("--quiet")
        .arg(a)
        .arg(b)
        .status()
        .unwrap();
    if !status.success() {
        let diff = Command::new("cmp")
            .arg("-l")
            .arg(a)
            .arg(b)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&diff.stdout);
        eprintln!(
            "{} and {} differ first at:\n{}",
            a.display(),
            b.display(),
            text.lines().take(10).collect::<Vec<_>>().join("\n")
        );
    }
    status.success()
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            out.extend(walk_files(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn images_bad_options_are_refused_naming_the_option() {
    let env = Env::new();
    let mut m = manifest("console=ttyS0");
    m["pipelines"][1]["stages"][1]["options"]["bootloader"] = json!("grub-efi");
    let run = env.build(&m, &[]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(run.stderr().contains("bootloader"), "{}", run.stderr());
    let mut m = manifest("console=ttyS0");
    m["pipelines"][0]["stages"][0]["options"]["partitions"][0]["filesystem"] = json!("btrfs");
    let run = env.build(&m, &[]);
    assert_eq!(run.code(), 2, "{}", run.describe());
    assert!(
        run.stderr().contains("/partitions/0/filesystem"),
        "{}",
        run.stderr()
    );
}
