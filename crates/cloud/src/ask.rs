//! One request to a credentials service (a token endpoint, a metadata server), not
//! retried: the fetch that needs the credentials is.

use std::time::Duration;

use crate::Error;

/// The HTTP client of credentials services: short timeouts, since a metadata server that
/// does not answer at once is not there.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("hoard/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Sends `request` to the service at `url`; the body of a success, otherwise
/// `refused("STATUS: what it said")`, where an XML error's `<Message>` is what it said.
pub(crate) async fn ask(
    request: reqwest::RequestBuilder,
    url: &str,
    refused: impl FnOnce(String) -> Error,
) -> Result<String, Error> {
    let unreachable = |source| Error::Unreachable {
        url: url.to_owned(),
        source,
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        let said = xml_text(&body, "Message").unwrap_or(body.trim());
        return Err(refused(format!(
            "{status}: {}",
            hoard_types::truncate(said)
        )));
    }
    Ok(body)
}

/// The text of the first `<name>…</name>` element of an XML answer (S3's and STS's
/// errors and answers).
pub fn xml_text<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_errors_are_read_by_element() {
        let answer = "<ErrorResponse><Error><Code>AccessDenied</Code>\
                      <Message> Not authorized </Message></Error></ErrorResponse>";
        assert_eq!(xml_text(answer, "Message"), Some("Not authorized"));
        assert_eq!(xml_text(answer, "Missing"), None);
        assert_eq!(xml_text("<Message>never closed", "Message"), None);
    }
}
