//! `~/.netrc` (or `$NETRC`): the passwords of hosts, where `wandb login` writes its key.

use std::path::{Path, PathBuf};

/// The password the netrc file holds for the host of `url` (an entry `host:port` matches
/// too, as the W&B SDK writes it for a server with a port), and the file it came from.
pub fn password(url: &str) -> Option<(String, PathBuf)> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let file = std::env::var_os("NETRC")
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".netrc")))?;
    let text = std::fs::read_to_string(&file).ok()?;
    let with_port = url.port().map(|p| format!("{host}:{p}"));
    find(&text, host, with_port.as_deref()).map(|p| (p, file))
}

/// The password of the first entry for `host` (or `with_port`), or of `default`.
fn find(text: &str, host: &str, with_port: Option<&str>) -> Option<String> {
    let mut tokens = text.split_whitespace();
    let mut matching = false;
    while let Some(token) = tokens.next() {
        match token {
            "machine" => {
                let machine = tokens.next()?;
                matching = machine == host || Some(machine) == with_port;
            }
            "default" => matching = true,
            "password" if matching => return tokens.next().map(str::to_owned),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn the_entry_of_the_host_is_found() {
        let text = "machine other.example login user password wrong\n\
                    machine api.wandb.ai\n  login user\n  password right\n";
        assert_eq!(find(text, "api.wandb.ai", None), Some("right".into()));
        assert_eq!(find(text, "nowhere.example", None), None);
        let ported = "machine localhost:8080 login user password ported";
        assert_eq!(
            find(ported, "localhost", Some("localhost:8080")),
            Some("ported".into())
        );
        assert_eq!(find(ported, "localhost", None), None);
        assert_eq!(
            find("default login u password fallback", "any.example", None),
            Some("fallback".into())
        );
    }
}
