//! The grammar of settings that both flags and `hoard.toml` take, checked in one place:
//! sizes, rates, socket modes and paths, the metrics address.

use std::path::Path;

use anyhow::{Context as _, bail};

/// A scrub rate: bytes per second, or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Off,
    PerSecond(u64),
}

/// `16MiB/s`, `16MiB` (per second), `off`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(Rate::Off);
    }
    let size = text.trim().strip_suffix("/s").unwrap_or(text.trim());
    match size.parse::<Size>() {
        Ok(Size::Bytes(n)) if n > 0 => Ok(Rate::PerSecond(n)),
        _ => Err(format!(
            "`{text}` is not a rate; write e.g. \"16MiB/s\", or \"off\""
        )),
    }
}

/// `0660`, `660`, `0o600`: an octal mode for the socket; its owner must keep read and
/// write.
pub fn parse_mode(text: &str) -> anyhow::Result<u32> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 && mode & 0o600 == 0o600 => Ok(mode),
        _ => bail!(
            "Invalid socket mode `{text}`: expected an octal mode like 0600 or 0660, readable and writable by its owner"
        ),
    }
}

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

pub fn check_socket_path(socket: &Path) -> anyhow::Result<()> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        bail!(
            "The socket path `{}` is {len} bytes; Unix sockets allow at most {MAX_SOCKET_PATH}: choose a shorter `socket`",
            socket.display()
        );
    }
    Ok(())
}

/// The `/metrics` address: `host:port` on loopback only (node exporters and scrapers on
/// this host).
pub fn metrics_addr(addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    let parsed: std::net::SocketAddr = addr.parse().with_context(|| {
        format!("Invalid metrics address `{addr}`: expected e.g. 127.0.0.1:9477")
    })?;
    if !parsed.ip().is_loopback() {
        bail!(
            "The metrics address `{addr}` is not a loopback address; hoard serves /metrics on loopback only"
        );
    }
    Ok(parsed)
}

/// A cache size as configured: bytes, or a share of the cache's filesystem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Size {
    Bytes(u64),
    /// A fraction in `(0, 1]`.
    Share(f64),
}

impl std::str::FromStr for Size {
    type Err = String;

    /// `"200 GiB"`, `"1.5TB"`, `"500 MiB"`, `"1048576"` (bytes), `"40%"`. Binary units
    /// (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB) of 1000.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("`{text}` is not a size; write e.g. \"200 GiB\", \"500 MB\" or \"40%\"");
        let trimmed = text.trim();
        if let Some(percent) = trimmed.strip_suffix('%') {
            let value: f64 = percent.trim().parse().map_err(|_| bad())?;
            if !(value > 0.0 && value <= 100.0) {
                return Err(format!(
                    "`{text}`: a share must be above 0% and at most 100%"
                ));
            }
            return Ok(Self::Share(value / 100.0));
        }
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let value: f64 = number.parse().map_err(|_| bad())?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "tb" | "t" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(bad()),
        };
        let bytes = value * scale;
        if !(0.0..1.8e19).contains(&bytes) {
            return Err(format!("`{text}` is not a usable cache size"));
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked to be within u64 above"
        )]
        Ok(Self::Bytes(bytes as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_people_write_them() {
        for (text, bytes) in [
            ("200 GiB", 200u64 << 30),
            ("500MB", 500_000_000),
            ("1.5 TiB", 3 << 39),
            ("4096", 4096),
            ("64 kib", 64 << 10),
        ] {
            assert_eq!(text.parse::<Size>(), Ok(Size::Bytes(bytes)), "{text}");
        }
        assert_eq!("40%".parse::<Size>(), Ok(Size::Share(0.4)));
        assert_eq!("0".parse::<Size>(), Ok(Size::Bytes(0)));
        for bad in ["", "GiB", "-5 GiB", "5 GiBs", "0%", "1e3"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }
}

/// `--mode`: any text is taken (the daemon checks it, in one line), and shell completion
/// offers the modes.
#[derive(Clone, Copy, Debug)]
pub struct LinkModes;

impl clap::builder::TypedValueParser for LinkModes {
    type Value = String;

    fn parse_ref(
        &self,
        _: &clap::Command,
        _: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        Ok(value.to_string_lossy().into_owned())
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            ["auto", "hardlink", "reflink", "copy", "symlink"]
                .into_iter()
                .map(clap::builder::PossibleValue::new),
        ))
    }
}
