//! Says what to do when RocksDB's prebuilt library is missing, instead of a linker error.
//!
//! `.cargo/config.toml` points `librocksdb-sys` at the static library that
//! `scripts/rocksdb` builds once per machine (`ROCKSDB_LIB_DIR`); `ROCKSDB_COMPILE=1`
//! compiles RocksDB from source instead.

fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=ROCKSDB_COMPILE");
    let compile =
        std::env::var("ROCKSDB_COMPILE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let Some(dir) = std::env::var_os("ROCKSDB_LIB_DIR").filter(|_| !compile) else {
        return;
    };
    let lib = std::path::Path::new(&dir).join("librocksdb.a");
    println!("cargo:rerun-if-changed={}", lib.display());
    assert!(
        lib.is_file(),
        "RocksDB's library `{}` is missing: run `scripts/rocksdb` once (it builds it in about 10 minutes; scripts/setup runs it), or set ROCKSDB_COMPILE=1 to compile RocksDB in this build",
        lib.display()
    );
}
