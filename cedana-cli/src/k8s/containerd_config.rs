//! The `cedana` runtime in containerd's config, edited with `toml_edit` so everything
//! else in the file (comments, order, spacing) stays as the admin wrote it.

use toml_edit::{value, Array, DocumentMut, Item, Table};

/// The runtime handler name a RuntimeClass refers to.
pub const RUNTIME_NAME: &str = "cedana";
/// containerd's runtime type for `containerd-shim-cedana-v2`.
pub const RUNTIME_TYPE: &str = "io.containerd.cedana.v2";
/// Annotations containerd passes from pods and containers to our shim (restore requests).
pub const ANNOTATIONS: &str = "cedana.io/*";

/// Why a containerd config cannot take the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML at all.
    #[error("not valid TOML: {0}")]
    Parse(#[from] toml_edit::TomlError),
    /// A config version we do not write.
    #[error(
        "config version {0} is not supported: version 2 (containerd 1.x) and 3 (containerd \
         2.x) are; convert it with `containerd config migrate`"
    )]
    Version(String),
    /// A key on the way to the runtime's table is something else than a table.
    #[error("`{0}` is not a table; fix the config by hand")]
    NotATable(String),
}

/// The two layouts containerd reads: the CRI plugin and so the runtimes moved in 2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `version = 2`: containerd 1.x.
    V2,
    /// `version = 3`: containerd 2.x.
    V3,
}

impl Layout {
    /// The `version` key's value.
    pub fn version(self) -> i64 {
        match self {
            Layout::V2 => 2,
            Layout::V3 => 3,
        }
    }

    /// The plugin whose `containerd.runtimes` table holds the CRI runtimes.
    fn cri_plugin(self) -> &'static str {
        match self {
            Layout::V2 => "io.containerd.grpc.v1.cri",
            Layout::V3 => "io.containerd.cri.v1.runtime",
        }
    }

    /// The keys from the document's root to the runtimes table.
    fn runtimes_path(self) -> [&'static str; 4] {
        ["plugins", self.cri_plugin(), "containerd", "runtimes"]
    }

    /// The runtime's table as a TOML header, for messages.
    pub fn runtime_table(self) -> String {
        format!(
            "[plugins.\"{}\".containerd.runtimes.{RUNTIME_NAME}]",
            self.cri_plugin()
        )
    }
}

/// A parsed containerd config.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    doc: DocumentMut,
    layout: Layout,
}

impl ContainerdConfig {
    /// Parses a config; only versions 2 and 3 are accepted (a file without `version` is
    /// version 1 to containerd).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let doc: DocumentMut = text.parse()?;
        let layout = match doc.get("version").and_then(Item::as_integer) {
            Some(2) => Layout::V2,
            Some(3) => Layout::V3,
            Some(v) => return Err(ConfigError::Version(v.to_string())),
            None => return Err(ConfigError::Version("1 (no `version` key)".into())),
        };
        Ok(Self { doc, layout })
    }

    /// The config's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The `imports` entries (files or globs merged into this config).
    pub fn imports(&self) -> Vec<String> {
        self.doc
            .get("imports")
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a runtime named `cedana` is configured.
    pub fn has_runtime(&self) -> bool {
        self.runtimes()
            .is_some_and(|t| t.contains_key(RUNTIME_NAME))
    }

    /// Adds the `cedana` runtime with the shim at `shim_path`; false if one is already
    /// there (left as it is: the admin may have tuned it).
    pub fn add_runtime(&mut self, shim_path: &str) -> Result<bool, ConfigError> {
        if self.has_runtime() {
            return Ok(false);
        }
        let mut table = self.doc.as_table_mut();
        let mut walked = String::new();
        for key in self.layout.runtimes_path() {
            walked = if walked.is_empty() {
                key.to_string()
            } else {
                format!("{walked}.{key}")
            };
            let entry = table.entry(key).or_insert_with(|| {
                // Implicit: no empty `[plugins]` header appears for tables made on the way.
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            });
            table = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::NotATable(walked.clone()))?;
        }
        table.insert(RUNTIME_NAME, Item::Table(runtime_table(shim_path)));
        Ok(true)
    }

    /// Removes the `cedana` runtime; false if there was none.
    pub fn remove_runtime(&mut self) -> bool {
        let mut table = self.doc.as_table_mut();
        for key in self.layout.runtimes_path() {
            match table.get_mut(key).and_then(Item::as_table_mut) {
                Some(t) => table = t,
                None => return false,
            }
        }
        table.remove(RUNTIME_NAME).is_some()
    }

    /// The runtimes table, if the config has one.
    fn runtimes(&self) -> Option<&Table> {
        let mut table = self.doc.as_table();
        for key in self.layout.runtimes_path() {
            table = table.get(key)?.as_table()?;
        }
        Some(table)
    }
}

impl std::fmt::Display for ContainerdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.doc)
    }
}

/// A drop-in file for a directory the main config imports: just the `cedana` runtime.
pub fn drop_in(layout: Layout, shim_path: &str) -> String {
    let mut config = ContainerdConfig {
        doc: DocumentMut::new(),
        layout,
    };
    config.doc["version"] = value(layout.version());
    // A fresh document has no non-table keys on the way, so this cannot fail.
    let _ = config.add_runtime(shim_path);
    format!(
        "# Written by `cedana k8s-helper install`; removed by `cedana k8s-helper uninstall`.\n{config}"
    )
}

/// `runtime_type`, the shim's path (so containerd's PATH does not matter) and the
/// annotations our shim reads.
fn runtime_table(shim_path: &str) -> Table {
    let mut t = Table::new();
    t["runtime_type"] = value(RUNTIME_TYPE);
    t["runtime_path"] = value(shim_path);
    let annotations: Array = [ANNOTATIONS].into_iter().collect();
    t["pod_annotations"] = value(annotations.clone());
    t["container_annotations"] = value(annotations);
    t
}

#[cfg(test)]
mod tests;
