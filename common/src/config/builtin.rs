//! The built-in catalog: offline agents for a deployment without a
//! catalog file, on the scripted model or, once fetched, the local one.

use std::path::Path;

use super::{Catalog, ConfigError};

/// The text of the built-in catalog (see [`Catalog::builtin`]).
pub const BUILTIN_CATALOG: &str = include_str!("builtin.toml");

/// The built-in `assistant` agent on the scripted model, as the built-in
/// catalog declares it.
const BUILTIN_ASSISTANT_SCRIPTED: &str = include_str!("builtin_assistant_scripted.toml");

/// The built-in `assistant` agent on the local model (`{path}`: the model
/// file as a TOML string).
const BUILTIN_ASSISTANT_LOCAL: &str = include_str!("builtin_assistant_local.toml");

/// The text of the built-in catalog with its `assistant` agent on the
/// local model at `model`.
pub fn builtin_text_with_local(model: &Path) -> String {
    let path = toml::Value::String(model.to_string_lossy().into_owned()).to_string();
    BUILTIN_CATALOG.replace(
        BUILTIN_ASSISTANT_SCRIPTED,
        &BUILTIN_ASSISTANT_LOCAL.replace("{path}", &path),
    )
}

impl Catalog {
    /// The built-in catalog with its `assistant` agent on the local model
    /// at `model` (the other agents stay scripted: they need tool calls).
    pub fn builtin_with_local(model: &Path) -> Result<Self, ConfigError> {
        Self::parse(
            &builtin_text_with_local(model),
            Path::new("<built-in catalog>"),
        )
    }

    /// The catalog used when `SWITCHYARD_CONFIG` is not set: works offline.
    /// Its text is a constant, checked by the `builtin_catalog_is_valid` test.
    pub fn builtin() -> Result<Self, ConfigError> {
        Self::parse(BUILTIN_CATALOG, Path::new("<built-in catalog>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    #[test]
    fn builtin_catalog_is_valid() {
        let catalog = Catalog::builtin().unwrap();
        assert_eq!(catalog.agents[0].id, "assistant");
        assert!(BUILTIN_CATALOG.contains(BUILTIN_ASSISTANT_SCRIPTED));
    }

    #[test]
    fn the_builtin_assistant_moves_to_the_local_model() {
        let catalog = Catalog::builtin_with_local(Path::new("/models/a \"b\".gguf")).unwrap();
        let assistant = catalog.agent("assistant").unwrap();
        assert_eq!(assistant.provider, "local");
        let Some(ProviderKind::Local(local)) = catalog.provider("local").map(|p| &p.kind) else {
            panic!("expected the local provider");
        };
        assert_eq!(local.model_file(), Path::new("/models/a \"b\".gguf"));
        assert_eq!(catalog.agent("billing").unwrap().provider, "scripted");
        assert_eq!(
            catalog.agents.len(),
            Catalog::builtin().unwrap().agents.len()
        );
    }
}
