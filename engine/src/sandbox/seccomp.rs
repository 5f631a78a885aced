//! The seccomp filter every stage runs under: what the user namespace does
//! not stop.
//!
//! A stage is root in a user namespace (see [`super::userns`]). The kernel
//! already refuses it everything that needs a capability of the host's
//! namespace: mounting devtmpfs or a block device, creating device nodes,
//! writing global sysctls, loading modules, changing the host's network.
//! What is left are system calls that are reachable from any namespace and
//! touch state shared with the host, or that are large attack surface with
//! no use in a build. Those return EPERM (a tool sees "Operation not
//! permitted", as it would under podman or docker, and can fall back),
//! everything else is allowed.
//!
//! | refused                                   | why (podman's / osbuild's default profiles refuse them too) |
//! |-------------------------------------------|-------------------------------------------------------------|
//! | `keyctl`, `add_key`, `request_key`        | the kernel keyring is not namespaced                        |
//! | `bpf`, `perf_event_open`                  | kernel programs and tracing of the whole machine            |
//! | `userfaultfd`                             | a classic exploit helper; no build needs it                 |
//! | `kexec_load`, `kexec_file_load`, `reboot` | the host's kernel                                           |
//! | `init_module`, `finit_module`, `delete_module` | the host's kernel                                      |
//! | `swapon`, `swapoff`, `acct`, `quotactl`   | host-wide accounting and memory                             |
//! | `settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex` | the host's clock (not namespaced)        |
//! | `syslog`                                  | the host's kernel log                                       |
//! | `open_by_handle_at`, `name_to_handle_at`  | opens files by handle, past the sandbox's mounts ("shocker") |
//! | `lookup_dcookie`, `vhangup`, `iopl`, `ioperm` | hardware and profiling                                  |
//! | `io_uring_setup`, `io_uring_enter`, `io_uring_register` | large attack surface, refused by docker since 2023 |
//!
//! Allowed on purpose: `unshare`/`clone` of new namespaces (a nested
//! namespace only has the stage's own rights, and tools such as bwrap,
//! unshare or podman in autopkgtests use them), `mount` (only what a user
//! namespace may mount: tmpfs, proc of its own pid namespace, binds),
//! `ptrace` (of the stage's own processes; gdb in test suites), `chown`,
//! `mknod` of fifos and sockets, `setuid`/`setgid` (root in the tree
//! switches to `_apt` and friends).
//!
//! The filter is built for the host's native architecture: a system call
//! made through another ABI (i386 or x32 on amd64) kills the process rather
//! than slip past the table.

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::BTreeMap;

/// The refused system calls, by name (for messages and tests) and number.
pub fn refused() -> Vec<(&'static str, libc::c_long)> {
    let mut calls = vec![
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("reboot", libc::SYS_reboot),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("syslog", libc::SYS_syslog),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("vhangup", libc::SYS_vhangup),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([("iopl", libc::SYS_iopl), ("ioperm", libc::SYS_ioperm)]);
    calls
}

/// The filter as a BPF program for this machine's architecture.
pub fn program() -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for {}: {e}", std::env::consts::ARCH))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = refused()
        .into_iter()
        .map(|(_, nr)| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("building the seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("compiling the seccomp filter: {e}"))
}

/// `program` in the kernel's own layout, ready for [`install`] (which must
/// not allocate: it runs between fork and exec).
pub fn to_kernel(program: &BpfProgram) -> Vec<libc::sock_filter> {
    program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// Installs `filter` on the calling thread (inherited by its children and
/// kept across exec).
///
/// Without `no_new_privs`: the caller is root of its user namespace (it
/// has CAP_SYS_ADMIN there, which is what seccomp asks for instead), and
/// setuid programs in the tree (su, ping) must keep working; their setuid
/// bit only ever reaches the namespace's root.
pub fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(filter.len()) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl copies the program from `prog`, which points at
    // `filter`, alive for the whole call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_and_names_each_call_once() {
        let prog = program().unwrap();
        assert!(!prog.is_empty());
        let mut names: Vec<_> = refused().into_iter().map(|(n, _)| n).collect();
        let before = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), before);
        assert!(names.contains(&"keyctl") && names.contains(&"bpf"));
    }

    #[test]
    fn a_refused_call_fails_with_eperm_in_a_filtered_child() {
        // In a child process: the filter stays with whoever installs it.
        let prog = to_kernel(&program().unwrap());
        // SAFETY: the child only makes system calls (nothing allocates) and exits.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match install(&prog) {
                // Without CAP_SYS_ADMIN (tests as a user) seccomp needs no_new_privs.
                Err(_) => {
                    // SAFETY: plain prctl.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
                    };
                    install(&prog).map_or(3, |()| 0)
                }
                Ok(()) => 0,
            };
            if code == 0 {
                // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, …) with plain integers.
                #[allow(unsafe_code)]
                let rc = unsafe { libc::syscall(libc::SYS_keyctl, 0, -3, 0) };
                let errno = std::io::Error::last_os_error().raw_os_error();
                let ok = rc == -1 && errno == Some(libc::EPERM);
                // SAFETY: getpid is always allowed.
                #[allow(unsafe_code)]
                let alive = unsafe { libc::syscall(libc::SYS_getpid) } > 0;
                // SAFETY: _exit ends the forked child without running the parent's destructors.
                #[allow(unsafe_code)]
                unsafe {
                    libc::_exit(if ok && alive { 0 } else { 4 })
                };
            }
            // SAFETY: as above.
            #[allow(unsafe_code)]
            unsafe {
                libc::_exit(code)
            };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        #[allow(unsafe_code)]
        unsafe {
            libc::waitpid(pid, &mut status, 0)
        };
        assert!(libc::WIFEXITED(status), "status {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "keyctl was not refused");
    }
}
