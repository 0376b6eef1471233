//! Which web pages may call the API from a browser (CORS).
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SWITCHYARD_CORS_ORIGINS` | comma list of the origins whose pages may call the API | none: browsers refuse every other origin (`switchyard dev`: `http://localhost:*`, `http://127.0.0.1:*`, `http://[::1]:*`) |
//! | `SWITCHYARD_CORS_CREDENTIALS` | `true` lets those pages send cookies (Easy Auth's session, say) | `false` |
//!
//! An origin is written as a browser sends it, `scheme://host[:port]`, with
//! no path. Two wildcards: `*` for the port (`http://localhost:*`) and a
//! leading `*.` for any subdomain (`https://*.example.com`, which does not
//! match `https://example.com` itself). `*` alone allows every origin, and
//! is refused with credentials: a page anywhere could then act with a
//! visitor's cookies. Bearer tokens need no credentials setting: a page
//! sends them in `Authorization`, which is always allowed.

use std::time::Duration;

use super::ConfigError;

/// How long a browser may remember a preflight's answer (Chromium caps
/// this at 2 hours, Firefox at 24).
pub const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(3600);

/// The origins `switchyard dev` allows when `SWITCHYARD_CORS_ORIGINS` is
/// unset: any port of this machine, where front-end dev servers run.
pub const LOCALHOST_ORIGINS: &str = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*";

/// One allowed origin, or a pattern of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `*`: every origin.
    Any,
    /// An origin, lowercase; `host` may start with `*.` and `port` be `*`.
    Origin {
        scheme: String,
        host: String,
        /// `None` is the scheme's default port.
        port: Option<String>,
    },
}

/// Browser access to the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsSettings {
    /// Empty: no page of another origin may call the API.
    pub origins: Vec<OriginRule>,
    /// Pages may send cookies (`Access-Control-Allow-Credentials: true`).
    pub credentials: bool,
}

impl CorsSettings {
    /// Whether some origin may call the API at all.
    pub fn is_on(&self) -> bool {
        !self.origins.is_empty()
    }

    /// Whether a page of `origin` (an `Origin` header's value) may call the API.
    pub fn allows(&self, origin: &str) -> bool {
        let Ok(OriginRule::Origin { scheme, host, port }) = parse_origin(origin, false) else {
            // `null` (a sandboxed page or a file) and anything malformed.
            return false;
        };
        self.origins.iter().any(|rule| match rule {
            OriginRule::Any => true,
            OriginRule::Origin {
                scheme: s,
                host: h,
                port: p,
            } => {
                *s == scheme
                    && match h.strip_prefix("*.") {
                        Some(domain) => host
                            .strip_suffix(domain)
                            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                        None => *h == host,
                    }
                    && (p.as_deref() == Some("*") || *p == port)
            }
        })
    }

    /// Read the settings; `default_origins` applies when
    /// `SWITCHYARD_CORS_ORIGINS` is unset (`switchyard dev` passes
    /// [`LOCALHOST_ORIGINS`]).
    pub(super) fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        default_origins: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let listed = lookup("SWITCHYARD_CORS_ORIGINS")
            .filter(|v| !v.trim().is_empty())
            .or(default_origins.map(str::to_owned))
            .unwrap_or_default();
        let invalid = |problem: String| ConfigError::Invalid {
            name: "SWITCHYARD_CORS_ORIGINS",
            value: listed.clone(),
            problem,
        };
        let mut origins = Vec::new();
        for entry in listed.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let rule = match entry {
                "*" => OriginRule::Any,
                _ => parse_origin(entry, true)
                    .map_err(|problem| invalid(format!("{entry:?}: {problem}")))?,
            };
            if !origins.contains(&rule) {
                origins.push(rule);
            }
        }
        let credentials = super::flag(lookup, "SWITCHYARD_CORS_CREDENTIALS", false)?;
        if credentials && origins.contains(&OriginRule::Any) {
            return Err(invalid(
                "`*` cannot be allowed with SWITCHYARD_CORS_CREDENTIALS=true: every site on the web \
                 could act with a visitor's cookies; list the origins instead"
                    .into(),
            ));
        }
        Ok(Self {
            origins,
            credentials,
        })
    }
}

/// `scheme://host[:port]`, lowercased; with `patterns`, `*.` may lead the
/// host and `*` be the port.
fn parse_origin(text: &str, patterns: bool) -> Result<OriginRule, String> {
    let text = text.to_ascii_lowercase();
    let (scheme, rest) = text
        .split_once("://")
        .ok_or("expected scheme://host[:port], such as https://app.example.com")?;
    if scheme != "http" && scheme != "https" {
        return Err("the scheme must be http or https".into());
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err("an origin is scheme://host[:port], with no path, query or user".into());
    }
    // An IPv6 host is bracketed: `[::1]:3000`.
    let (host, port) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']').ok_or("an unclosed [")?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("expected :port after ]")?),
            };
            (format!("[{address}]"), port)
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (rest.to_owned(), None),
        },
    };
    let wildcard_host = host.strip_prefix("*.");
    let name = wildcard_host.unwrap_or(&host);
    if name.is_empty() || name.contains('*') || (wildcard_host.is_some() && !patterns) {
        return Err("a host is a name or address; only a leading `*.` is a pattern".into());
    }
    let port = match port {
        None => None,
        Some("*") if patterns => Some("*".to_owned()),
        Some(port) => match port.parse::<u16>() {
            Ok(n) if n > 0 => Some(n.to_string()),
            _ => return Err(format!("{port:?} is not a port")),
        },
    };
    // Browsers leave the scheme's default port out of `Origin`.
    let default_port = if scheme == "http" { "80" } else { "443" };
    let port = port.filter(|p| p != default_port);
    Ok(OriginRule::Origin {
        scheme: scheme.to_owned(),
        host,
        port,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)], default: Option<&str>) -> Result<CorsSettings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CorsSettings::from_lookup(&|name| vars.get(name).cloned(), default)
    }

    #[test]
    fn nothing_is_allowed_unless_listed() {
        let settings = read(&[], None).unwrap();
        assert!(!settings.is_on());
        assert!(!settings.allows("http://localhost:3000"));
    }

    #[test]
    fn the_development_default_allows_any_local_port_only() {
        let dev = read(&[], Some(LOCALHOST_ORIGINS)).unwrap();
        for allowed in [
            "http://localhost:3000",
            "http://localhost:5173",
            "http://localhost",
            "http://127.0.0.1:8000",
            "http://[::1]:3000",
        ] {
            assert!(dev.allows(allowed), "{allowed}");
        }
        for refused in [
            "https://localhost:3000",
            "http://localhost.evil.example:3000",
            "http://evil.example",
            "null",
            "",
        ] {
            assert!(!dev.allows(refused), "{refused}");
        }
        let explicit = read(
            &[("SWITCHYARD_CORS_ORIGINS", "https://app.example.com")],
            Some(LOCALHOST_ORIGINS),
        )
        .unwrap();
        assert!(
            !explicit.allows("http://localhost:3000"),
            "a list replaces the default"
        );
    }

    #[test]
    fn exact_origins_and_subdomain_patterns() {
        let settings = read(
            &[(
                "SWITCHYARD_CORS_ORIGINS",
                "https://App.Example.com, https://*.preview.example.com, http://10.0.0.5:8080, https://b.example:443",
            )],
            None,
        )
        .unwrap();
        assert!(settings.allows("https://app.example.com"));
        assert!(!settings.allows("http://app.example.com"));
        assert!(!settings.allows("https://app.example.com:8443"));
        assert!(settings.allows("https://pr-12.preview.example.com"));
        assert!(settings.allows("https://a.b.preview.example.com"));
        assert!(!settings.allows("https://preview.example.com"));
        assert!(!settings.allows("https://evilpreview.example.com"));
        assert!(settings.allows("http://10.0.0.5:8080"));
        assert!(!settings.allows("http://10.0.0.5"));
        assert!(
            settings.allows("https://b.example"),
            "the default port is left out of Origin"
        );
    }

    #[test]
    fn any_origin_is_refused_with_credentials_and_bad_entries_stop_start_up() {
        let any = read(&[("SWITCHYARD_CORS_ORIGINS", "*")], None).unwrap();
        assert!(any.allows("https://anything.example"));
        assert!(!any.allows("null"));

        let error = read(
            &[
                ("SWITCHYARD_CORS_ORIGINS", "*"),
                ("SWITCHYARD_CORS_CREDENTIALS", "true"),
            ],
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("CREDENTIALS"), "{error}");

        for bad in [
            "localhost:3000",
            "https://app.example.com/",
            "ftp://files.example.com",
            "https://a.*.example.com",
            "http://localhost:99999",
            "https://user@app.example.com",
        ] {
            let error = read(&[("SWITCHYARD_CORS_ORIGINS", bad)], None).unwrap_err();
            assert!(
                error.to_string().contains("SWITCHYARD_CORS_ORIGINS"),
                "{bad}: {error}"
            );
        }
        assert!(read(&[("SWITCHYARD_CORS_CREDENTIALS", "yes")], None).is_err());
    }
}
