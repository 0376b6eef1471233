//! Azure App Service Easy Auth: the platform signs the user in and passes
//! who they are in `X-MS-CLIENT-PRINCIPAL*` headers, removing any such
//! headers a client sent. They are only trusted when `easy_auth` is on,
//! that is, when the API is reachable only through App Service.

use axum::http::HeaderMap;
use base64::Engine as _;
use serde::Deserialize;

pub const PRINCIPAL: &str = "x-ms-client-principal";
pub const PRINCIPAL_ID: &str = "x-ms-client-principal-id";
pub const PRINCIPAL_NAME: &str = "x-ms-client-principal-name";

/// The role claim type App Service uses unless the principal names another.
const DEFAULT_ROLE_TYPE: &str = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role";

/// The decoded `X-MS-CLIENT-PRINCIPAL`.
#[derive(Deserialize)]
struct Principal {
    #[serde(default)]
    claims: Vec<Claim>,
    #[serde(default)]
    role_typ: Option<String>,
}

#[derive(Deserialize)]
struct Claim {
    typ: String,
    val: String,
}

/// Who the headers say the caller is.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub id: String,
    pub name: String,
    pub roles: Vec<String>,
}

/// `Ok(None)` when no Easy Auth header is present; `Err` with a reason
/// when they are present but unusable.
pub fn principal(headers: &HeaderMap) -> Result<Option<Caller>, &'static str> {
    let text = |name: &str| -> Result<Option<&str>, &'static str> {
        headers
            .get(name)
            .map(|v| v.to_str().map_err(|_| "an Easy Auth header is not text"))
            .transpose()
    };
    let id = text(PRINCIPAL_ID)?;
    let encoded = text(PRINCIPAL)?;
    let name = text(PRINCIPAL_NAME)?;
    let Some(id) = id.filter(|id| !id.trim().is_empty()) else {
        return if encoded.is_some() || name.is_some() {
            Err("the Easy Auth headers lack X-MS-CLIENT-PRINCIPAL-ID")
        } else {
            Ok(None)
        };
    };
    let mut roles = Vec::new();
    if let Some(encoded) = encoded {
        let json = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| "X-MS-CLIENT-PRINCIPAL is not base64")?;
        let principal: Principal = serde_json::from_slice(&json)
            .map_err(|_| "X-MS-CLIENT-PRINCIPAL is not a client principal")?;
        let role_type = principal.role_typ.as_deref().unwrap_or(DEFAULT_ROLE_TYPE);
        roles = principal
            .claims
            .into_iter()
            .filter(|c| c.typ == role_type || c.typ == "roles")
            .map(|c| c.val)
            .collect();
        roles.dedup();
    }
    Ok(Some(Caller {
        id: id.to_owned(),
        name: name.unwrap_or(id).to_owned(),
        roles,
    }))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use base64::Engine as _;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn roles_come_from_the_principal_claims() {
        let principal = serde_json::json!({
            "auth_typ": "aad",
            "claims": [
                {"typ": "name", "val": "Ada"},
                {"typ": "roles", "val": "admin"},
                {"typ": DEFAULT_ROLE_TYPE, "val": "support"},
            ],
            "name_typ": "name",
            "role_typ": DEFAULT_ROLE_TYPE,
        });
        let encoded = base64::engine::general_purpose::STANDARD.encode(principal.to_string());
        let found = principal_from(&[
            (PRINCIPAL_ID, "7f0c"),
            (PRINCIPAL_NAME, "ada@example.com"),
            (PRINCIPAL, &encoded),
        ]);
        assert_eq!(
            found,
            Ok(Some(Caller {
                id: "7f0c".into(),
                name: "ada@example.com".into(),
                roles: vec!["admin".into(), "support".into()],
            }))
        );
    }

    fn principal_from(pairs: &[(&'static str, &str)]) -> Result<Option<Caller>, &'static str> {
        principal(&headers(pairs))
    }

    #[test]
    fn missing_or_broken_headers() {
        assert_eq!(principal_from(&[]), Ok(None));
        assert!(principal_from(&[(PRINCIPAL_NAME, "ada")]).is_err());
        assert!(principal_from(&[(PRINCIPAL_ID, "1"), (PRINCIPAL, "%%%")]).is_err());
        let not_json = base64::engine::general_purpose::STANDARD.encode("[1,2]");
        assert!(principal_from(&[(PRINCIPAL_ID, "1"), (PRINCIPAL, &not_json)]).is_err());
        assert_eq!(
            principal_from(&[(PRINCIPAL_ID, "1")])
                .unwrap()
                .unwrap()
                .name,
            "1"
        );
    }
}
