//! AWS shared config files, the way AWS tools read them: the profile named by
//! `AWS_PROFILE` (else `default`) from `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`,
//! sections `[NAME]`) and `AWS_CONFIG_FILE` (`~/.aws/config`, sections `[profile NAME]`
//! and `[default]`). Credentials come from the credentials file first, then the config
//! file; `region` and `endpoint_url` from the config file. The caller lets the `AWS_*`
//! environment win over all of it. Secrets are kept out of `Debug`.

use std::path::{Path, PathBuf};

use ini::Ini;

/// What a profile gives.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Profile {
    /// Its name.
    pub name: String,
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `aws_session_token`.
    pub session_token: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// `endpoint_url`.
    pub endpoint_url: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .finish()
    }
}

/// Where the files are, from the environment `var` gives (the process's, in use).
fn files(var: &dyn Fn(&str) -> Option<String>) -> (PathBuf, PathBuf) {
    let home = var("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let aws = home.join(".aws");
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| aws.join("credentials"));
    let config = var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| aws.join("config"));
    (credentials, config)
}

/// Reads `path` as INI; a missing file is `None`, an unreadable one an error naming it.
fn read(path: &Path) -> Result<Option<Ini>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ini::load_from_str(&text)
            .map(Some)
            .map_err(|e| format!("cannot parse {}: {e}; fix or remove it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The profile the environment `var` names, from its files: `None` when no file has it
/// and it was not asked for by name; an error when `AWS_PROFILE` names one that no file
/// has, or a file cannot be read.
pub(super) fn load(var: &dyn Fn(&str) -> Option<String>) -> Result<Option<Profile>, String> {
    let asked = var("AWS_PROFILE").filter(|p| !p.is_empty());
    let name = asked.clone().unwrap_or_else(|| "default".into());
    let (cred_path, config_path) = files(var);
    let (creds, config) = (read(&cred_path)?, read(&config_path)?);
    let found = from_files(&name, creds.as_ref(), config.as_ref());
    match (found, asked) {
        (Some(p), _) => Ok(Some(p)),
        (None, None) => Ok(None),
        (None, Some(name)) => Err(format!(
            "AWS_PROFILE={name}, but neither {} nor {} has that profile; add it there, \
             point AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE at the files that have it, \
             or unset AWS_PROFILE",
            cred_path.display(),
            config_path.display()
        )),
    }
}

/// Profile `name` from parsed files, if either has its section.
pub(super) fn from_files(name: &str, creds: Option<&Ini>, config: Option<&Ini>) -> Option<Profile> {
    let config_section = match name {
        "default" => "default".to_string(),
        n => format!("profile {n}"),
    };
    let c = creds.and_then(|i| i.section(Some(name)));
    let f = config.and_then(|i| {
        i.section(Some(config_section.as_str()))
            // `[default]` is also written `[profile default]`.
            .or_else(|| {
                (name == "default")
                    .then(|| i.section(Some("profile default")))
                    .flatten()
            })
    });
    if c.is_none() && f.is_none() {
        return None;
    }
    let get = |key: &str| {
        c.and_then(|s| s.get(key))
            .or_else(|| f.and_then(|s| s.get(key)))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    Some(Profile {
        name: name.to_string(),
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: f
            .and_then(|s| s.get("region"))
            .map(|v| v.trim().to_string()),
        endpoint_url: f
            .and_then(|s| s.get("endpoint_url"))
            .map(|v| v.trim().to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDS: &str = "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = \
        s3cr3t-default\n\n[dev]\naws_access_key_id=AKIADEV\naws_secret_access_key=s3cr3t-dev\n\
        aws_session_token = tok-dev\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile dev]\nregion = us-west-2\n\
        endpoint_url = http://127.0.0.1:9000\n\n[profile only-config]\n\
        aws_access_key_id = AKIACFG\naws_secret_access_key = s3cr3t-cfg\n";

    fn parsed() -> (Ini, Ini) {
        (
            Ini::load_from_str(CREDS).expect("creds"),
            Ini::load_from_str(CONFIG).expect("config"),
        )
    }

    #[test]
    fn profiles_merge_both_files() {
        let (creds, config) = parsed();
        let dev = from_files("dev", Some(&creds), Some(&config)).expect("dev");
        assert_eq!(dev.access_key_id.as_deref(), Some("AKIADEV"));
        assert_eq!(dev.secret_access_key.as_deref(), Some("s3cr3t-dev"));
        assert_eq!(dev.session_token.as_deref(), Some("tok-dev"));
        assert_eq!(dev.region.as_deref(), Some("us-west-2"));
        assert_eq!(dev.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        let d = from_files("default", Some(&creds), Some(&config)).expect("default");
        assert_eq!(
            (d.access_key_id.as_deref(), d.region.as_deref()),
            (Some("AKIADEFAULT"), Some("eu-west-1"))
        );
        // Credentials in the config file alone count too.
        let c = from_files("only-config", None, Some(&config)).expect("only-config");
        assert_eq!(c.access_key_id.as_deref(), Some("AKIACFG"));
        assert!(from_files("nope", Some(&creds), Some(&config)).is_none());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let (creds, config) = parsed();
        let dev = from_files("dev", Some(&creds), Some(&config)).expect("dev");
        let shown = format!("{dev:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("tok-dev"),
            "{shown}"
        );
        assert!(shown.contains("AKIADEV"), "{shown}");
    }

    #[test]
    fn files_come_from_the_environment_and_a_missing_profile_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (cred, conf) = (tmp.path().join("c"), tmp.path().join("f"));
        std::fs::write(&cred, CREDS).expect("write");
        std::fs::write(&conf, CONFIG).expect("write");
        let env = |profile: Option<&'static str>| {
            let (cred, conf) = (cred.clone(), conf.clone());
            move |k: &str| match k {
                "AWS_PROFILE" => profile.map(str::to_string),
                "AWS_SHARED_CREDENTIALS_FILE" => Some(cred.display().to_string()),
                "AWS_CONFIG_FILE" => Some(conf.display().to_string()),
                "HOME" => Some("/nonexistent".into()),
                _ => None,
            }
        };
        let dev = load(&env(Some("dev"))).expect("load").expect("dev");
        assert_eq!(dev.region.as_deref(), Some("us-west-2"));
        let d = load(&env(None)).expect("load").expect("default");
        assert_eq!(d.name, "default");
        let err = load(&env(Some("missing"))).expect_err("named but absent");
        assert!(
            err.contains("AWS_PROFILE=missing") && err.contains("unset AWS_PROFILE"),
            "{err}"
        );
        // No files at all and no profile asked for: nothing, not an error.
        let none = |k: &str| (k == "HOME").then(|| "/nonexistent".to_string());
        assert_eq!(load(&none).expect("load"), None);
    }
}
