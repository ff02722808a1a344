#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test that calls them"
)]

//! fs-verity on blobs, for real. This machine's kernel has no fs-verity, so the test boots
//! Debian's kernel, which has it, under qemu (software emulation). The VM gets the `hoard`
//! binary under test and an ext4 image made with `-O verity`. `scripts/verity-vm` builds
//! the kit (kernel, modules, busybox); the README's test command sets `HOARD_VERITY_VM`.
//!
//! The guest runs shell scripts and prints `@@ key rc=N output` lines. The host asserts on
//! them, and between two boots it flips a byte of a blob on the disk image, beneath the
//! filesystem.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hoard_tests::binary;

/// Shell helpers for the guest: `start NAME on|off` starts a daemon on `/mnt/NAME` (without
/// the background scrub: `hoard verify` is what must find the corruption),
/// `run KEY CMD…` prints `@@ KEY rc=N output-on-one-line`.
const GUEST_LIB: &str = r#"
export HOARD_LOG=warn
start() {
  hoard daemon --socket /tmp/$1.sock --cache-dir /mnt/$1 --upstream dir:///mnt/up \
    --fs-verity $2 --scrub-rate off > /tmp/$1.log 2>&1 &
  eval "pid_$1=$!"
  for i in $(seq 600); do [ -S /tmp/$1.sock ] && return; sleep 0.1; done
  echo "@@ start-$1 rc=1 $(cat /tmp/$1.log | tr '\n' ' ')"
}
stop() { eval "kill \$pid_$1; wait \$pid_$1"; }
run() {
  key=$1; shift
  out=$("$@" 2>&1); rc=$?
  echo "@@ $key rc=$rc $(echo "$out" | tr '\n' ' ')"
}
on() { sock=$1; shift; HOARD_SOCKET=/tmp/$sock.sock "$@"; }
"#;

/// First boot: publish (cache `ca`), fetch into another cache (`cb`), try to write through
/// a materialized link as root, then seal the blobs of a cache filled without sealing
/// (`cc`) with `hoard verify`.
const PHASE_1: &str = r"
start ca on
run publish on ca hoard publish acme/vision/pets /mnt/src --wait
run status-a sh -c 'HOARD_SOCKET=/tmp/ca.sock hoard status | grep fs-verity'
start cb on
run get on cb hoard get acme/vision/pets:latest --root /mnt/dest
run same diff -r /mnt/src /mnt/dest
run status-b sh -c 'HOARD_SOCKET=/tmp/cb.sock hoard status | grep fs-verity'
run append sh -c 'echo x >> /mnt/dest/a.txt'
run chmod-append sh -c 'chmod u+w /mnt/dest/a.txt; echo x >> /mnt/dest/a.txt; rc=$?; chmod 444 /mnt/dest/a.txt; exit $rc'
run truncate sh -c 'true > /mnt/dest/b.txt'
run still-same diff -r /mnt/src /mnt/dest
start cc off
run get-c on cc hoard get acme/vision/pets:latest --root /mnt/dest-c
run status-c sh -c 'HOARD_SOCKET=/tmp/cc.sock hoard status | grep fs-verity'
stop cc
start cc on
run verify-c on cc hoard verify
run append-c sh -c 'echo x >> /mnt/dest-c/a.txt'
stop ca; stop cb; stop cc
";

/// Second boot, after a byte of the marker's blob in `cb` was flipped on the disk image.
const PHASE_2: &str = r"
start cb on
run read cat /mnt/dest/images/marker.bin
run verify on cb hoard verify
run status sh -c 'HOARD_SOCKET=/tmp/cb.sock hoard status | grep fs-verity'
run get on cb hoard get acme/vision/pets:latest --root /mnt/dest
run same diff -r /mnt/src /mnt/dest
stop cb
";

/// The first boot's `/init`: mounts, loads the modules, runs the phase the kernel command
/// line names, powers off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in /modules/*.ko; do insmod $m || echo "@@ insmod rc=1 $m"; done
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
if mount -t ext4 /dev/vda /mnt; then
  phase=$(sed -n 's/.*hoard.phase=\([0-9]\).*/\1/p' /proc/cmdline)
  cd /tmp && . /mnt/lib.sh && . /mnt/phase-$phase.sh
  cd / && umount /mnt
else
  echo "@@ mount rc=1"
fi
echo "@@ end rc=0"
poweroff -f
"#;

struct Vm {
    kit: PathBuf,
    dir: tempfile::TempDir,
}

impl Vm {
    fn new() -> Self {
        let kit = PathBuf::from(std::env::var("HOARD_VERITY_VM").expect(
            "HOARD_VERITY_VM names the fs-verity VM kit: run scripts/test, or export HOARD_VERITY_VM=$(scripts/verity-vm)",
        ));
        let vm = Self {
            kit,
            dir: tempfile::tempdir().unwrap(),
        };
        vm.initrd();
        vm
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The initramfs: busybox, the modules, `/init`, and the `hoard` and `hoardd` under test
    /// (without their debug info) with the libraries they link.
    fn initrd(&self) {
        let root = self.path("initrd");
        for dir in ["bin", "modules", "proc", "sys", "dev", "mnt", "tmp"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::copy(self.kit.join("busybox"), root.join("bin/busybox")).unwrap();
        for module in std::fs::read_dir(self.kit.join("modules")).unwrap() {
            let module = module.unwrap();
            std::fs::copy(module.path(), root.join("modules").join(module.file_name())).unwrap();
        }
        // `hoard` hands `hoard daemon` to the `hoardd` beside it.
        for name in ["hoard", "hoardd"] {
            let binary = binary(name);
            ok(Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&binary)
                .arg(root.join("bin").join(name)));
            let ldd = ok(Command::new("ldd").arg(&binary));
            for lib in ldd.split_whitespace().filter(|word| word.starts_with('/')) {
                let to = root.join(lib.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(lib, to).unwrap();
            }
        }
        let init = root.join("init");
        std::fs::write(&init, INIT).unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        ok(Command::new("sh")
            .arg("-c")
            .arg("find . | cpio -o -H newc --quiet > ../initrd.cpio")
            .current_dir(&root));
    }

    /// The disk: an ext4 image with fs-verity holding the guest's scripts, the files to
    /// publish and an empty `dir://` upstream.
    fn disk(&self, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let stage = self.path("stage");
        for (name, bytes) in files {
            let path = stage.join("src").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        std::fs::create_dir_all(stage.join("up/artifacts")).unwrap();
        std::fs::create_dir_all(stage.join("up/blobs")).unwrap();
        std::fs::write(stage.join("lib.sh"), GUEST_LIB).unwrap();
        std::fs::write(stage.join("phase-1.sh"), PHASE_1).unwrap();
        std::fs::write(stage.join("phase-2.sh"), PHASE_2).unwrap();
        let image = self.path("disk.img");
        ok(Command::new("mkfs.ext4")
            .args(["-q", "-b", "4096", "-O", "verity", "-d"])
            .arg(&stage)
            .arg(&image)
            .arg("1G"));
        image
    }

    /// Boots, runs the phase, and returns the guest's `@@` lines by key.
    fn boot(&self, image: &Path, phase: u8) -> BTreeMap<String, String> {
        let console = ok(Command::new("timeout")
            .args(["600", "qemu-system-x86_64", "-accel", "tcg", "-m", "1024"])
            .args(["-nographic", "-nic", "none", "-no-reboot", "-kernel"])
            .arg(self.kit.join("vmlinuz"))
            .arg("-initrd")
            .arg(self.path("initrd.cpio"))
            .arg("-append")
            .arg(format!(
                "console=ttyS0 loglevel=1 panic=-1 hoard.phase={phase}"
            ))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", image.display())));
        let lines: BTreeMap<String, String> = console
            .lines()
            // The firmware's screen-clearing codes may precede the first line.
            .filter_map(|line| Some(&line[line.find("@@ ")? + 3..]))
            .filter_map(|line| line.split_once(' '))
            .map(|(key, rest)| (key.to_owned(), rest.trim().to_owned()))
            .collect();
        assert!(
            lines.contains_key("end") && !lines.contains_key("mount"),
            "the guest did not run its phase {phase}:\n{console}"
        );
        lines
    }
}

/// Runs a command that must succeed; its stdout.
fn ok(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks that the guest's `key` line says exit code `rc` and contains every `needle`.
fn expect(lines: &BTreeMap<String, String>, key: &str, rc: u8, needles: &[&str]) {
    let line = lines
        .get(key)
        .unwrap_or_else(|| panic!("no `{key}` line from the guest: {lines:#?}"));
    assert!(
        line.starts_with(&format!("rc={rc} ")) || *line == format!("rc={rc}"),
        "{key}: {line}"
    );
    for needle in needles {
        assert!(line.contains(needle), "{key} lacks `{needle}`: {line}");
    }
}

/// Flips one byte of `path`'s first block on the ext4 image, beneath the filesystem.
fn corrupt(image: &Path, path: &str) {
    let bmap = ok(Command::new("debugfs")
        .arg("-R")
        .arg(format!("bmap {path} 0"))
        .arg(image));
    let block: u64 = bmap
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("debugfs bmap {path}: {bmap}"));
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let offset = block * 4096 + 100;
    let mut byte = [0u8];
    disk.seek(SeekFrom::Start(offset)).unwrap();
    disk.read_exact(&mut byte).unwrap();
    disk.seek(SeekFrom::Start(offset)).unwrap();
    disk.write_all(&[byte[0] ^ 0xff]).unwrap();
}

#[test]
fn sealed_blobs_cannot_be_written_and_corruption_beneath_the_filesystem_is_caught() {
    let vm = Vm::new();
    let marker: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let marker_digest = hoard_types::Digest::of(&marker);
    let image = vm.disk(&[
        ("a.txt", b"hello\n".to_vec()),
        ("b.txt", b"hello\n".to_vec()),
        ("images/marker.bin", marker),
    ]);

    let first = vm.boot(&image, 1);
    expect(&first, "publish", 0, &["committed as acme/vision/pets:v0"]);
    // Two distinct contents: published into `ca`, fetched into `cb`, sealed in both.
    expect(&first, "status-a", 0, &["fs-verity: on: 2 blobs sealed"]);
    expect(&first, "get", 0, &["fetched 2 blobs"]);
    expect(&first, "same", 0, &[]);
    expect(&first, "status-b", 0, &["fs-verity: on: 2 blobs sealed"]);
    // Root itself cannot change a sealed blob through its link, even after `chmod u+w`.
    expect(&first, "append", 1, &["Operation not permitted"]);
    expect(&first, "chmod-append", 1, &["Operation not permitted"]);
    expect(&first, "truncate", 1, &["Operation not permitted"]);
    expect(&first, "still-same", 0, &[]);
    // A cache filled with sealing off gets its blobs sealed by `hoard verify`.
    expect(&first, "get-c", 0, &["fetched 2 blobs"]);
    expect(
        &first,
        "status-c",
        0,
        &["fs-verity: off: `fs_verity = \"off\"`"],
    );
    expect(
        &first,
        "verify-c",
        0,
        &[
            "checked 2 blobs",
            "0 bad",
            "sealed 2 blobs with fs-verity",
            "fs-verity: 2 of 2 blobs sealed",
        ],
    );
    expect(&first, "append-c", 1, &["Operation not permitted"]);

    let blob = hoard_store::BlobKey::new(marker_digest, false).relative_path();
    corrupt(&image, &format!("/cb/blobs-v1/{blob}"));
    let second = vm.boot(&image, 2);
    // The kernel refuses the changed bytes instead of returning them...
    expect(&second, "read", 1, &["Input/output error"]);
    // ...`hoard verify` quarantines the blob and fetches it again from the upstream.
    expect(
        &second,
        "verify",
        1,
        &[
            &marker_digest.to_hex(),
            "reading it failed",
            "1 bad",
            "fetched again from the upstream",
        ],
    );
    expect(&second, "status", 0, &["fs-verity: on: 1 blobs sealed"]);
    expect(&second, "get", 0, &["fetched 0 blobs"]);
    expect(&second, "same", 0, &[]);
}
