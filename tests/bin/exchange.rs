//! `hoard-test-exchange DIR A B MILLIS`: swaps the names `A` and `B` in `DIR` with
//! `renameat2(RENAME_EXCHANGE)` as soon as `A` exists, trying in a tight loop for at most
//! `MILLIS` ms, then keeps swapping them back and forth for 50 ms more (so that whatever
//! the daemon does next by name lands on either one). Prints `ready` once looping; exits
//! 0 if it swapped, 1 if time ran out. The attacker of `tests/e2e/shared.rs`: it races
//! the daemon's creation of a directory.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command line tool: the test reads `ready` from stdout"
)]

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, a, b, millis] = args.as_slice() else {
        eprintln!("usage: hoard-test-exchange DIR A B MILLIS");
        std::process::exit(2);
    };
    let dir = rustix::fs::open(
        dir.as_str(),
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .expect("open the directory");
    let millis: u64 = millis.parse().expect("a number of milliseconds");
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(millis);
    println!("ready");
    let _ = std::io::stdout().flush();
    let swap = || {
        rustix::fs::renameat_with(
            &dir,
            a.as_str(),
            &dir,
            b.as_str(),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .is_ok()
    };
    while std::time::Instant::now() < deadline {
        // A lockless look first: `renameat2` would hold the directory's lock while it
        // looks, and so keep the daemon's `mkdir` waiting.
        if rustix::fs::statat(&dir, a.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_err() {
            continue;
        }
        if swap() {
            let flipping = std::time::Instant::now() + std::time::Duration::from_millis(50);
            while std::time::Instant::now() < flipping {
                swap();
            }
            std::process::exit(0);
        }
    }
    std::process::exit(1);
}
