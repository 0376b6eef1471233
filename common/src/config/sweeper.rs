//! Who takes back the runs of lost workers: one worker at a time, chosen by
//! a Kubernetes Lease in a cluster, by a PostgreSQL advisory lock elsewhere.

use std::path::Path;

use super::ConfigError;

/// Where Kubernetes mounts the namespace of a pod's service account.
pub(super) const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How the worker that sweeps lost runs is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweeperLeader {
    /// Every worker tries; a PostgreSQL advisory lock lets one act at a time.
    Postgres,
    /// The holder of a Kubernetes Lease sweeps (the advisory lock still
    /// guards each sweep, against a holder that lost the Lease unawares).
    Kubernetes(LeaseSettings),
}

/// The Lease the workers of a deployment compete for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
}

impl SweeperLeader {
    /// Read `SWITCHYARD_SWEEPER_LEADER` and, for Kubernetes, the Lease's name
    /// and namespace; `namespace_file` is where a pod finds its namespace.
    pub(super) fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        redis_prefix: &str,
        namespace_file: &Path,
    ) -> Result<Self, ConfigError> {
        let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let mode = set("SWITCHYARD_SWEEPER_LEADER").unwrap_or_else(|| "auto".into());
        let kubernetes = match mode.as_str() {
            "postgres" => false,
            "kubernetes" => true,
            "auto" => set("KUBERNETES_SERVICE_HOST").is_some(),
            _ => {
                return Err(ConfigError::Invalid {
                    name: "SWITCHYARD_SWEEPER_LEADER",
                    value: mode,
                    problem: "expected postgres, kubernetes or auto".into(),
                });
            }
        };
        if !kubernetes {
            return Ok(Self::Postgres);
        }
        let name = match set("SWITCHYARD_SWEEPER_LEASE") {
            Some(name) if is_dns_subdomain(&name) => name,
            Some(name) => {
                return Err(ConfigError::Invalid {
                    name: "SWITCHYARD_SWEEPER_LEASE",
                    value: name,
                    problem: "a Lease name is lowercase letters, digits, '-' and '.', \
                              starts and ends with a letter or digit, at most 253 characters"
                        .into(),
                });
            }
            None => lease_name_for(redis_prefix),
        };
        let namespace = match set("SWITCHYARD_NAMESPACE") {
            Some(namespace) if is_dns_label(&namespace) => namespace,
            Some(namespace) => {
                return Err(ConfigError::Invalid {
                    name: "SWITCHYARD_NAMESPACE",
                    value: namespace,
                    problem: NAMESPACE_RULE.into(),
                });
            }
            None => pod_namespace(namespace_file)?,
        };
        Ok(Self::Kubernetes(LeaseSettings { name, namespace }))
    }
}

const NAMESPACE_RULE: &str = "a namespace is lowercase letters, digits and '-', \
                              starts and ends with a letter or digit, at most 63 characters";

/// The namespace of the pod's service account, when not set explicitly.
fn pod_namespace(file: &Path) -> Result<String, ConfigError> {
    let uninferable = |problem: String| ConfigError::Uninferable {
        name: "SWITCHYARD_NAMESPACE",
        problem,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| uninferable(format!("reading {}: {e}", file.display())))?;
    let namespace = text.trim();
    if !is_dns_label(namespace) {
        return Err(uninferable(format!(
            "{} holds {namespace:?}: {NAMESPACE_RULE}",
            file.display()
        )));
    }
    Ok(namespace.to_owned())
}

/// The default Lease name, `{prefix}-sweeper`, made a valid object name:
/// deployments sharing a cluster namespace but not a Redis prefix do not
/// share a sweeper.
fn lease_name_for(redis_prefix: &str) -> String {
    let mut name = String::new();
    for c in format!("{redis_prefix}-sweeper").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    // Past the limit, keep the end: it tells deployments apart and ends
    // with "sweeper", so the name stays valid and non-empty.
    if name.len() > MAX_SUBDOMAIN {
        name = name.split_off(name.len() - MAX_SUBDOMAIN);
    }
    name.trim_start_matches('-').to_owned()
}

const MAX_SUBDOMAIN: usize = 253;

/// Lowercase letters, digits and '-', starting and ending with a letter or
/// digit: the parts of DNS-1123 names.
fn is_dns_word(s: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.starts_with(alphanumeric)
        && s.ends_with(alphanumeric)
        && s.chars().all(|c| alphanumeric(c) || c == '-')
}

/// A DNS-1123 label: what Kubernetes accepts as a namespace.
fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_word(s)
}

/// A DNS-1123 subdomain: what Kubernetes accepts as a Lease's name.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_SUBDOMAIN && s.split('.').all(is_dns_word)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;

    fn leader(vars: &[(&str, &str)], namespace_file: &Path) -> Result<SweeperLeader, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SweeperLeader::from_lookup(&|name| vars.get(name).cloned(), "sy", namespace_file)
    }

    /// A namespace file holding `text`, removed when the test ends.
    struct NamespaceFile(PathBuf);

    impl NamespaceFile {
        fn new(text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "switchyard-namespace-{}",
                uuid::Uuid::now_v7().simple()
            ));
            std::fs::write(&path, text).expect("writing the namespace file");
            Self(path)
        }
    }

    impl Drop for NamespaceFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const NO_FILE: &str = "/nonexistent/switchyard/namespace";

    fn kubernetes(name: &str, namespace: &str) -> SweeperLeader {
        SweeperLeader::Kubernetes(LeaseSettings {
            name: name.into(),
            namespace: namespace.into(),
        })
    }

    #[test]
    fn auto_picks_postgres_outside_kubernetes() {
        assert_eq!(
            leader(&[], Path::new(NO_FILE)).unwrap(),
            SweeperLeader::Postgres
        );
        assert_eq!(
            leader(
                &[("SWITCHYARD_SWEEPER_LEADER", "postgres")],
                Path::new(NO_FILE)
            )
            .unwrap(),
            SweeperLeader::Postgres
        );
    }

    #[test]
    fn auto_picks_kubernetes_in_a_pod_with_its_namespace() {
        let file = NamespaceFile::new("team-a\n");
        let found = leader(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")], &file.0).unwrap();
        assert_eq!(found, kubernetes("sy-sweeper", "team-a"));
    }

    #[test]
    fn postgres_can_be_forced_in_a_pod() {
        let vars = [
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("SWITCHYARD_SWEEPER_LEADER", "postgres"),
        ];
        assert_eq!(
            leader(&vars, Path::new(NO_FILE)).unwrap(),
            SweeperLeader::Postgres
        );
    }

    #[test]
    fn explicit_lease_and_namespace_win() {
        let file = NamespaceFile::new("from-file");
        let vars = [
            ("SWITCHYARD_SWEEPER_LEADER", "kubernetes"),
            ("SWITCHYARD_SWEEPER_LEASE", "switchyard.sweeper"),
            ("SWITCHYARD_NAMESPACE", "prod"),
        ];
        assert_eq!(
            leader(&vars, &file.0).unwrap(),
            kubernetes("switchyard.sweeper", "prod")
        );
    }

    #[test]
    fn the_default_lease_name_is_the_redis_prefix_made_valid() {
        assert_eq!(lease_name_for("sy"), "sy-sweeper");
        assert_eq!(lease_name_for("Team_A:prod"), "team-a-prod-sweeper");
        assert_eq!(lease_name_for("::x"), "x-sweeper");
        let long = lease_name_for(&"a".repeat(400));
        assert!(is_dns_subdomain(&long), "{long}");
        assert!(long.ends_with("-sweeper"));
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = leader(&[("SWITCHYARD_SWEEPER_LEADER", "etcd")], Path::new(NO_FILE))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("SWITCHYARD_SWEEPER_LEADER=\"etcd\" is invalid"),
            "{err}"
        );

        let vars = [
            ("SWITCHYARD_SWEEPER_LEADER", "kubernetes"),
            ("SWITCHYARD_NAMESPACE", "prod"),
            ("SWITCHYARD_SWEEPER_LEASE", "Sweeper_1"),
        ];
        let err = leader(&vars, Path::new(NO_FILE)).unwrap_err().to_string();
        assert!(
            err.starts_with("SWITCHYARD_SWEEPER_LEASE=\"Sweeper_1\" is invalid"),
            "{err}"
        );

        let vars = [
            ("SWITCHYARD_SWEEPER_LEADER", "kubernetes"),
            ("SWITCHYARD_NAMESPACE", "-prod"),
        ];
        let err = leader(&vars, Path::new(NO_FILE)).unwrap_err().to_string();
        assert!(
            err.starts_with("SWITCHYARD_NAMESPACE=\"-prod\" is invalid"),
            "{err}"
        );
    }

    #[test]
    fn kubernetes_without_a_namespace_is_refused() {
        let vars = [("SWITCHYARD_SWEEPER_LEADER", "kubernetes")];
        let err = leader(&vars, Path::new(NO_FILE)).unwrap_err().to_string();
        assert!(
            err.starts_with("SWITCHYARD_NAMESPACE is not set and cannot be inferred: reading"),
            "{err}"
        );

        let file = NamespaceFile::new("Not A Namespace");
        let err = leader(&vars, &file.0).unwrap_err().to_string();
        assert!(err.contains("holds \"Not A Namespace\""), "{err}");
    }
}
