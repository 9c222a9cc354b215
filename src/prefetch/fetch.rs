//! One prefetch key fetched from the EHR's FHIR server: the rendered template resolved against
//! `fhirServer`, GET (or POST `{type}/_search` when the URL is too long), `next` links followed up to
//! the page cap, the answer read as Cardinal reads `prefetch` (text + indexed fields), marked `fetched`.
//!
//! The bearer token goes only below the base URL named by `fhirServer`: templates cannot leave it,
//! `next` links must stay under it, and redirects are not followed. No message here carries a
//! URL (they hold patient ids), a header or a server's answer.

use std::fmt;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, Response, StatusCode, Url};
use serde::Deserialize;

use crate::fhir::{Origin, PrefetchValue, ReadError, Resource, TooDeep};

use super::template::RenderError;

/// Why one key could not be fetched. Fixed wording, numbers and manifest names only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchFailure {
    #[error("{0}")]
    Render(#[from] RenderError),
    #[error("`fhirServer` is not an absolute http or https URL")]
    BadServer,
    #[error("`fhirServer` is not one this caller may name")]
    NotAllowed,
    #[error("`fhirAuthorization.access_token` cannot be sent in an HTTP header")]
    BadToken,
    #[error("Cardinal's FHIR client is not available")]
    NoClient,
    #[error("its template resolves outside `fhirServer`")]
    OutsideServer,
    #[error("the FHIR server did not answer within the {0} ms prefetch deadline")]
    Deadline(u64),
    #[error("the FHIR server could not be reached")]
    Unreachable,
    #[error("the exchange with the FHIR server failed")]
    Transport,
    #[error("the FHIR server answered HTTP {0}")]
    Status(u16),
    #[error("the FHIR server's answer is not a FHIR resource or Bundle")]
    NotFhir,
    #[error("the FHIR server's answer {0}")]
    TooDeep(TooDeep),
    #[error("the FHIR server answered with an OperationOutcome")]
    OperationOutcome,
    #[error("the FHIR server's answers exceed {0} bytes")]
    TooLarge(usize),
    #[error("the search has more than {0} pages")]
    TooManyPages(usize),
    #[error("a `next` link of the search leads away from `fhirServer`")]
    ForeignLink,
}

impl FetchFailure {
    /// The reason told to the caller: what the request itself got wrong, or one fixed phrase for
    /// anything the network or the FHIR server did, so an error answer reveals nothing about what
    /// sits at the other end (no port scanning through Cardinal).
    pub fn public_reason(&self) -> String {
        match self {
            Self::Render(_)
            | Self::BadServer
            | Self::NotAllowed
            | Self::BadToken
            | Self::OutsideServer => self.to_string(),
            Self::NoClient
            | Self::Deadline(_)
            | Self::Unreachable
            | Self::Transport
            | Self::Status(_)
            | Self::NotFhir
            | Self::TooDeep(_)
            | Self::OperationOutcome
            | Self::TooLarge(_)
            | Self::TooManyPages(_)
            | Self::ForeignLink => "it could not be obtained from the FHIR server".to_owned(),
        }
    }
}

/// `fhir_server` as a base URL: absolute http(s), no query or fragment, ending in `/`.
pub fn base_url(fhir_server: &str) -> Option<Url> {
    let mut base = Url::parse(fhir_server.trim()).ok()?;
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        return None;
    }
    base.set_query(None);
    base.set_fragment(None);
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Some(base)
}

/// Limits on one key's fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_pages: usize,
    pub max_url_length: usize,
    /// All pages of one key together.
    pub max_bytes: usize,
}

/// The FHIR server of one request: its base URL (ending in `/`) and the `Authorization` header.
#[derive(Clone)]
pub struct FhirServer {
    base: Url,
    authorization: Option<HeaderValue>,
}

impl fmt::Debug for FhirServer {
    // The base URL is the EHR's, the header a secret: neither is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhirServer")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl FhirServer {
    /// `fhir_server` must be an absolute http(s) URL; a base without a trailing `/` gets one, so
    /// `https://ehr/fhir` + `Patient/1` is `https://ehr/fhir/Patient/1`.
    pub fn new(fhir_server: &str, access_token: Option<&str>) -> Result<Self, FetchFailure> {
        let base = base_url(fhir_server).ok_or(FetchFailure::BadServer)?;
        let authorization = match access_token {
            None => None,
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| FetchFailure::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self {
            base,
            authorization,
        })
    }

    /// A rendered template as an absolute URL below the base (a leading `/` is taken as relative
    /// to the base too).
    pub fn resolve(&self, relative: &str) -> Result<Url, FetchFailure> {
        let url = self
            .base
            .join(relative.trim_start_matches('/'))
            .map_err(|_| FetchFailure::OutsideServer)?;
        if url.as_str().starts_with(self.base.as_str()) {
            Ok(url)
        } else {
            Err(FetchFailure::OutsideServer)
        }
    }

    /// The base URL (ending in `/`).
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A `next` link (absolute, or relative to the page it came from), if it stays under the base
    /// URL (not merely its origin): the token must not go to any other path.
    fn follow(&self, page: &Url, link: &str) -> Result<Url, FetchFailure> {
        let url = page.join(link).map_err(|_| FetchFailure::ForeignLink)?;
        let below_base = url.origin() == self.base.origin()
            && (url.path().starts_with(self.base.path())
                || format!("{}/", url.path()) == self.base.path());
        if below_base {
            Ok(url)
        } else {
            Err(FetchFailure::ForeignLink)
        }
    }
}

/// Fetches one key: `relative` is its rendered template.
pub async fn fetch_key(
    client: &Client,
    server: &FhirServer,
    relative: &str,
    limits: FetchLimits,
) -> Result<PrefetchValue, FetchFailure> {
    let mut url = server.resolve(relative)?;
    let instance_read =
        !relative.contains('?') && relative.trim_matches('/').split('/').count() == 2;
    let mut resources: Vec<Resource> = Vec::new();
    let mut bytes = 0;
    for page in 1..=limits.max_pages.max(1) {
        let response = send(client, server, &url, limits.max_url_length).await?;
        let status = response.status();
        if instance_read && matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
            // A read that found nothing: what an EHR sends as `null`.
            return Ok(PrefetchValue::Null);
        }
        if !status.is_success() {
            return Err(FetchFailure::Status(status.as_u16()));
        }
        let text = read_body(response, limits.max_bytes.saturating_sub(bytes)).await?;
        bytes += text.len();
        match PrefetchValue::from_json(&text, Origin::Fetched) {
            Ok(PrefetchValue::Bundle(entries)) => {
                resources.extend(entries);
                match next_link(&text)? {
                    None => return Ok(PrefetchValue::Bundle(resources)),
                    Some(link) => url = server.follow(&url, &link)?,
                }
            }
            Ok(value) if value.is_operation_outcome() => {
                return Err(FetchFailure::OperationOutcome);
            }
            Ok(value @ PrefetchValue::Resource(_)) if page == 1 => return Ok(value),
            Err(ReadError::TooDeep(why)) => return Err(FetchFailure::TooDeep(why)),
            Ok(_) | Err(ReadError::Invalid { .. }) => return Err(FetchFailure::NotFhir),
        }
    }
    Err(FetchFailure::TooManyPages(limits.max_pages))
}

/// GET `url`, or POST its query form-encoded to `{path}/_search` when `url` is longer than
/// `max_url_length` (FHIR's answer to search URLs that servers and proxies would cut).
async fn send(
    client: &Client,
    server: &FhirServer,
    url: &Url,
    max_url_length: usize,
) -> Result<Response, FetchFailure> {
    let request = match url.query() {
        Some(query) if url.as_str().len() > max_url_length => {
            let mut post = url.clone();
            post.set_query(None);
            post.set_fragment(None);
            let path = format!("{}/_search", post.path().trim_end_matches('/'));
            post.set_path(&path);
            client
                .post(post)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(query.to_owned())
        }
        _ => client.get(url.clone()),
    };
    let mut request = request.header(ACCEPT, "application/fhir+json");
    if let Some(authorization) = &server.authorization {
        request = request.header(AUTHORIZATION, authorization.clone());
    }
    // reqwest's errors print the URL: only their kind is kept.
    request.send().await.map_err(|e| {
        if e.is_connect() {
            FetchFailure::Unreachable
        } else {
            FetchFailure::Transport
        }
    })
}

/// The body as text, refused past `limit` bytes.
async fn read_body(mut response: Response, limit: usize) -> Result<String, FetchFailure> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(FetchFailure::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| FetchFailure::Transport)?
    {
        if body.len() + chunk.len() > limit {
            return Err(FetchFailure::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| FetchFailure::NotFhir)
}

#[derive(Deserialize)]
struct PageLinks {
    #[serde(default)]
    link: Vec<PageLink>,
}

#[derive(Deserialize)]
struct PageLink {
    relation: Option<String>,
    url: Option<String>,
}

/// The `next` link of a searchset page, if any.
fn next_link(page: &str) -> Result<Option<String>, FetchFailure> {
    let links: PageLinks = serde_json::from_str(page).map_err(|_| FetchFailure::NotFhir)?;
    Ok(links
        .link
        .into_iter()
        .find(|l| l.relation.as_deref() == Some("next"))
        .and_then(|l| l.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(base: &str) -> FhirServer {
        FhirServer::new(base, None).unwrap_or_else(|e| panic!("{base}: {e}"))
    }

    fn resolve(base: &str, relative: &str) -> Result<String, FetchFailure> {
        server(base).resolve(relative).map(String::from)
    }

    #[test]
    fn joins_templates_below_the_base_with_or_without_a_trailing_slash() {
        for base in ["http://ehr.test/fhir/R4", "http://ehr.test/fhir/R4/"] {
            assert_eq!(
                resolve(base, "Patient/p1"),
                Ok("http://ehr.test/fhir/R4/Patient/p1".into())
            );
            assert_eq!(
                resolve(base, "/Observation?patient=p1&code=http://loinc.org|1,2"),
                Ok(
                    "http://ehr.test/fhir/R4/Observation?patient=p1&code=http://loinc.org|1,2"
                        .into()
                )
            );
        }
        assert_eq!(
            resolve("https://ehr.test", "Patient/p%2F1"),
            Ok("https://ehr.test/Patient/p%2F1".into())
        );
        assert_eq!(
            resolve("https://ehr.test:8443/a?x=1#f", "Patient/1"),
            Ok("https://ehr.test:8443/a/Patient/1".into())
        );
    }

    #[test]
    fn a_template_cannot_leave_the_base() {
        for relative in ["../secret", "http://elsewhere.test/Patient/1", "/../../x"] {
            assert_eq!(
                resolve("http://ehr.test/fhir", relative),
                Err(FetchFailure::OutsideServer),
                "{relative}"
            );
        }
    }

    #[test]
    fn a_leading_double_slash_is_still_below_the_base() {
        assert_eq!(
            resolve("http://ehr.test/fhir", "//elsewhere.test/x"),
            Ok("http://ehr.test/fhir/elsewhere.test/x".into())
        );
    }

    #[test]
    fn only_absolute_http_and_https_servers() {
        for bad in [
            "ftp://ehr.test/fhir",
            "file:///etc",
            "/fhir",
            "ehr.test/fhir",
            "",
            "data:,x",
        ] {
            assert!(
                matches!(FhirServer::new(bad, None), Err(FetchFailure::BadServer)),
                "{bad}"
            );
        }
    }

    #[test]
    fn next_links_must_stay_under_the_servers_base() {
        let s = server("http://ehr.test/fhir");
        let page = Url::parse("http://ehr.test/fhir/Observation?patient=1").expect("url");
        assert_eq!(
            s.follow(&page, "http://ehr.test/fhir?_getpages=abc")
                .map(String::from),
            Ok("http://ehr.test/fhir?_getpages=abc".into())
        );
        for other_path in [
            "http://ehr.test/admin/x",
            "/fhirx/Observation",
            "../other",
            "http://ehr.test/fhir/../secret",
            "http://ehr.test/fhir/%2e%2e/secret",
        ] {
            assert_eq!(
                s.follow(&page, other_path),
                Err(FetchFailure::ForeignLink),
                "{other_path}"
            );
        }
        assert_eq!(
            s.follow(&page, "Observation?patient=1&_offset=10")
                .map(String::from),
            Ok("http://ehr.test/fhir/Observation?patient=1&_offset=10".into())
        );
        for foreign in [
            "https://ehr.test/fhir/x",
            "http://ehr.test:81/fhir/x",
            "http://evil.test/x",
        ] {
            assert_eq!(
                s.follow(&page, foreign),
                Err(FetchFailure::ForeignLink),
                "{foreign}"
            );
        }
    }

    #[test]
    fn the_token_is_not_printed() {
        let s = FhirServer::new("http://ehr.test/fhir", Some("s3cr3t-t0ken")).expect("server");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(matches!(
            FhirServer::new("http://ehr.test/fhir", Some("bad\ntoken")),
            Err(FetchFailure::BadToken)
        ));
    }

    #[test]
    fn finds_the_next_link() {
        let page = r#"{"resourceType":"Bundle","link":[{"relation":"self","url":"a"},{"relation":"next","url":"b"}],"entry":[]}"#;
        assert_eq!(next_link(page), Ok(Some("b".into())));
        assert_eq!(next_link(r#"{"resourceType":"Bundle"}"#), Ok(None));
    }
}
