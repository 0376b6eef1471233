//! Who may call the API: `SWITCHYARD_AUTH` names the authenticators that are
//! on, and each has its own settings.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SWITCHYARD_AUTH` | comma list of `api_key`, `oidc`, `easy_auth`, `dev` | none: `switchyard api` refuses to start (`switchyard dev`: `dev`) |
//! | `SWITCHYARD_DEV_FORCE` | `true` lets `dev` run beside another authenticator or on a non-loopback address, which start-up otherwise refuses | `false` |
//! | `SWITCHYARD_ADMIN_ROLE` | the role (OIDC or Easy Auth) that makes a user an administrator | `admin` |
//! | `SWITCHYARD_SERVICE_ROLE` | the role (OIDC or Easy Auth) that makes a caller a service, which may name the end user each request acts for (as a key made with `switchyard keys create --service` may) | `service` |
//! | `SWITCHYARD_OIDC_ISSUER` | with `oidc`: the exact `iss` of accepted tokens | required |
//! | `SWITCHYARD_OIDC_AUDIENCE` | with `oidc`: the `aud` accepted tokens must carry | required |
//! | `SWITCHYARD_OIDC_JWKS_URL` | with `oidc`: where the issuer publishes its signing keys | required |
//! | `SWITCHYARD_OIDC_ROLES_CLAIM` | with `oidc`: the claim that lists a user's roles | `roles` |
//! | `SWITCHYARD_OIDC_LEEWAY_SECS` | with `oidc`: clock skew allowed on `exp` and `nbf` | `60` |

use std::net::SocketAddr;
use std::time::Duration;

use super::ConfigError;

/// A way of telling who a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// `Authorization: Bearer <key>` with a key made by `switchyard keys create`.
    ApiKey,
    /// `Authorization: Bearer <JWT>` signed by the configured OIDC issuer.
    Oidc,
    /// Azure App Service Easy Auth's `X-MS-CLIENT-PRINCIPAL*` headers.
    EasyAuth,
    /// No credentials: the single development user `local`.
    Dev,
}

impl AuthMethod {
    pub const ALL: [Self; 4] = [Self::ApiKey, Self::Oidc, Self::EasyAuth, Self::Dev];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Oidc => "oidc",
            Self::EasyAuth => "easy_auth",
            Self::Dev => "dev",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// The authenticators that are on, and their settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthSettings {
    pub methods: Vec<AuthMethod>,
    /// Users holding this role administer the deployment.
    pub admin_role: String,
    /// Callers holding this role are services: apps acting for their own
    /// end users, whom each request may name.
    pub service_role: String,
    /// Present when `oidc` is on.
    pub oidc: Option<OidcSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    pub roles_claim: String,
    pub leeway: Duration,
}

impl AuthSettings {
    pub fn enabled(&self, method: AuthMethod) -> bool {
        self.methods.contains(&method)
    }

    /// `dev` makes every caller without credentials the administrator
    /// `local`: refused beside another authenticator (where it would let
    /// anyone skip that one) and on an address other machines reach,
    /// unless `forced` (`SWITCHYARD_DEV_FORCE=true`).
    pub(super) fn refuse_unsafe_dev(
        &self,
        listen: SocketAddr,
        forced: bool,
    ) -> Result<(), ConfigError> {
        if !self.enabled(AuthMethod::Dev) || forced {
            return Ok(());
        }
        let others: Vec<&str> = self
            .methods
            .iter()
            .filter(|m| **m != AuthMethod::Dev)
            .map(|m| m.as_str())
            .collect();
        if !others.is_empty() {
            return Err(ConfigError::Invalid {
                name: "SWITCHYARD_AUTH",
                value: self
                    .methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                problem: format!(
                    "dev beside {} would make every request without credentials the \
                     administrator `local`; use dev alone on a laptop (or set \
                     SWITCHYARD_DEV_FORCE=true to mean it)",
                    others.join(", ")
                ),
            });
        }
        if !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                name: "SWITCHYARD_LISTEN",
                value: listen.to_string(),
                problem: "with SWITCHYARD_AUTH=dev anyone reaching this address is the \
                          administrator `local`: listen on a loopback address (127.0.0.1, \
                          ::1), or set SWITCHYARD_DEV_FORCE=true to mean it"
                    .into(),
            });
        }
        Ok(())
    }

    /// Read the settings; `default_methods` applies when `SWITCHYARD_AUTH`
    /// is unset (`switchyard dev` passes `dev`).
    pub(super) fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        default_methods: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let listed = set("SWITCHYARD_AUTH").or(default_methods.map(str::to_owned));
        let mut methods = Vec::new();
        for name in listed.iter().flat_map(|l| l.split(',')).map(str::trim) {
            let method = AuthMethod::parse(name).ok_or_else(|| ConfigError::Invalid {
                name: "SWITCHYARD_AUTH",
                value: listed.clone().unwrap_or_default(),
                problem: format!(
                    "unknown authenticator {name:?}; expected a comma list of api_key, oidc, easy_auth, dev"
                ),
            })?;
            if !methods.contains(&method) {
                methods.push(method);
            }
        }
        let oidc = if methods.contains(&AuthMethod::Oidc) {
            let required = |name: &'static str| {
                set(name).ok_or(ConfigError::Uninferable {
                    name,
                    problem: "SWITCHYARD_AUTH includes oidc".into(),
                })
            };
            let leeway_raw = set("SWITCHYARD_OIDC_LEEWAY_SECS").unwrap_or_else(|| "60".into());
            let leeway = leeway_raw
                .parse::<u64>()
                .ok()
                .filter(|s| *s <= 600)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "SWITCHYARD_OIDC_LEEWAY_SECS",
                    value: leeway_raw.clone(),
                    problem: "expected whole seconds, at most 600".into(),
                })?;
            let jwks_url = required("SWITCHYARD_OIDC_JWKS_URL")?;
            if !(jwks_url.starts_with("https://") || jwks_url.starts_with("http://")) {
                return Err(ConfigError::Invalid {
                    name: "SWITCHYARD_OIDC_JWKS_URL",
                    value: jwks_url,
                    problem: "expected an http(s) URL".into(),
                });
            }
            Some(OidcSettings {
                issuer: required("SWITCHYARD_OIDC_ISSUER")?,
                audience: required("SWITCHYARD_OIDC_AUDIENCE")?,
                jwks_url,
                roles_claim: set("SWITCHYARD_OIDC_ROLES_CLAIM").unwrap_or_else(|| "roles".into()),
                leeway: Duration::from_secs(leeway),
            })
        } else {
            None
        };
        Ok(Self {
            methods,
            admin_role: set("SWITCHYARD_ADMIN_ROLE").unwrap_or_else(|| "admin".into()),
            service_role: set("SWITCHYARD_SERVICE_ROLE").unwrap_or_else(|| "service".into()),
            oidc,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn read(vars: &[(&str, &str)], default: Option<&str>) -> Result<AuthSettings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AuthSettings::from_lookup(&|name| vars.get(name).cloned(), default)
    }

    #[test]
    fn nothing_is_on_unless_named() {
        assert!(read(&[], None).unwrap().methods.is_empty());
        assert_eq!(read(&[], Some("dev")).unwrap().methods, [AuthMethod::Dev]);
        let both = read(
            &[("SWITCHYARD_AUTH", "api_key, easy_auth,api_key")],
            Some("dev"),
        )
        .unwrap();
        assert_eq!(both.methods, [AuthMethod::ApiKey, AuthMethod::EasyAuth]);
        assert!(
            !both.enabled(AuthMethod::Dev),
            "an explicit list replaces the default"
        );
    }

    #[test]
    fn unknown_authenticators_and_incomplete_oidc_stop_start_up() {
        let error = read(&[("SWITCHYARD_AUTH", "api_key,password")], None).unwrap_err();
        assert!(error.to_string().contains("\"password\""), "{error}");

        let error = read(&[("SWITCHYARD_AUTH", "oidc")], None).unwrap_err();
        assert!(error.to_string().contains("SWITCHYARD_OIDC_"), "{error}");

        let oidc = [
            ("SWITCHYARD_AUTH", "oidc"),
            ("SWITCHYARD_OIDC_ISSUER", "https://login.example.com/"),
            ("SWITCHYARD_OIDC_AUDIENCE", "switchyard"),
            ("SWITCHYARD_OIDC_JWKS_URL", "https://login.example.com/keys"),
        ];
        let settings = read(&oidc, None).unwrap().oidc.expect("oidc settings");
        assert_eq!(settings.roles_claim, "roles");
        assert_eq!(settings.leeway, Duration::from_secs(60));

        let mut bad_url = oidc.to_vec();
        bad_url[3].1 = "login.example.com/keys";
        assert!(read(&bad_url, None).is_err());
    }

    #[test]
    fn dev_runs_alone_on_loopback_unless_forced() {
        let on = |methods: &str, listen: &str, forced: bool| {
            read(&[("SWITCHYARD_AUTH", methods)], None)
                .unwrap()
                .refuse_unsafe_dev(listen.parse().unwrap(), forced)
                .map_err(|e| e.to_string())
        };
        assert_eq!(on("dev", "127.0.0.1:8080", false), Ok(()));
        assert_eq!(on("dev", "[::1]:8080", false), Ok(()));
        assert_eq!(on("api_key", "0.0.0.0:8080", false), Ok(()));
        let beside = on("api_key,dev", "127.0.0.1:8080", false).unwrap_err();
        assert!(
            beside.contains("dev beside api_key") && beside.contains("SWITCHYARD_DEV_FORCE"),
            "{beside}"
        );
        let exposed = on("dev", "0.0.0.0:8080", false).unwrap_err();
        assert!(
            exposed.contains("SWITCHYARD_LISTEN") && exposed.contains("loopback"),
            "{exposed}"
        );
        assert_eq!(on("dev,api_key", "0.0.0.0:8080", true), Ok(()));
    }
}
