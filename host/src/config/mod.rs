//! Configuration: the typed model of `gateway.toml`, its loading (variable interpolation,
//! strict parsing) and the error type that names file, line and key path of every problem.
//!
//! Semantic checks (unknown upstream, bad CIDR, missing certificate …) are done where the
//! configuration is compiled into a serving snapshot ([`crate::snapshot`]); they report
//! [`Issue`]s by key path, which [`Loaded::error`] turns into located diagnostics.

mod admin;
mod duration;
mod interpolate;
mod locate;
mod model;
mod policy;
mod state;
mod upstream;

use std::fmt;
use std::path::{Path, PathBuf};

pub use admin::AdminSettings;
pub use duration::Dur;
pub use interpolate::{VarError, interpolate};
pub use locate::{KeyPath, Locator, Seg};
pub use model::*;
pub use policy::*;
pub use state::*;
pub use upstream::*;

/// The shipped default configuration, used by `sluice run` when no file exists.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../gateway.toml");

/// A problem found in a configuration, located by key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where in the document.
    pub path: KeyPath,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl Issue {
    /// A new issue at `path`.
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
        }
    }
}

/// One located diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Key path, when known.
    pub path: Option<String>,
    /// The problem.
    pub message: String,
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file (or `<embedded>`).
    pub file: String,
    /// The problems, in document order where known.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, d) in self.diagnostics.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file)?;
            if let Some(line) = d.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
            if let Some(path) = &d.path {
                write!(f, "{path}: ")?;
            }
            write!(f, "{}", d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A parsed configuration with what is needed to locate later semantic issues.
pub struct Loaded {
    /// The typed configuration.
    pub config: Config,
    /// Display name of the source.
    pub file: String,
    /// Directory that relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    locator: Locator,
}

impl Loaded {
    /// Turns semantic issues into a located [`ConfigError`].
    pub fn error(&self, issues: Vec<Issue>) -> ConfigError {
        let mut diagnostics: Vec<Diagnostic> = issues
            .into_iter()
            .map(|i| Diagnostic {
                line: self.locator.line_of(&i.path),
                path: Some(i.path.to_string()),
                message: i.message,
            })
            .collect();
        diagnostics.sort_by_key(|d| d.line.unwrap_or(usize::MAX));
        ConfigError {
            file: self.file.clone(),
            diagnostics,
        }
    }
}

/// Reads and parses a configuration file.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        diagnostics: vec![Diagnostic {
            line: None,
            path: None,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    load_str(&src, file, base_dir)
}

/// Parses configuration text; `file` names it in errors, `base_dir` resolves relative paths.
pub fn load_str(src: &str, file: String, base_dir: PathBuf) -> Result<Loaded, ConfigError> {
    let text = interpolate(src, |k| std::env::var(k).ok()).map_err(|errors| ConfigError {
        file: file.clone(),
        diagnostics: errors
            .into_iter()
            .map(|e| Diagnostic {
                line: Some(e.line),
                path: None,
                message: format!("environment variable {} {}", e.name, e.reason),
            })
            .collect(),
    })?;
    let locator = Locator::new(text.clone());
    match toml::from_str::<Config>(&text) {
        Ok(mut config) => {
            resolve_paths(&mut config, &base_dir);
            Ok(Loaded {
                config,
                file,
                base_dir,
                locator,
            })
        }
        Err(e) => {
            let span = e.span();
            let line = span.as_ref().map(|r| locator.line_of_offset(r.start));
            let path = span
                .and_then(|r| locator.path_at(r.start))
                .map(|p| p.to_string());
            Err(ConfigError {
                file,
                diagnostics: vec![Diagnostic {
                    line,
                    path,
                    message: e.message().trim().to_string(),
                }],
            })
        }
    }
}

/// Makes file paths in the configuration relative to the configuration file's directory.
fn resolve_paths(config: &mut Config, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for l in &mut config.listeners {
        if let Some(tls) = &mut l.tls {
            for c in &mut tls.certificates {
                fix(&mut c.cert);
                fix(&mut c.key);
            }
            if let Some(ca) = &mut tls.client_ca {
                fix(ca);
            }
        }
    }
    fix(&mut config.policy.cache_dir);
    fix(&mut config.state.path);
    fix(&mut config.admin.token_file);
    if let Some(tls) = &mut config.admin.tls {
        for c in &mut tls.certificates {
            fix(&mut c.cert);
            fix(&mut c.key);
        }
        if let Some(ca) = &mut tls.client_ca {
            fix(ca);
        }
    }
    if let Some(ca) = config.redis.as_mut().and_then(|r| r.tls_ca.as_mut()) {
        fix(ca);
    }
    for p in config.plugins.values_mut() {
        fix(&mut p.path);
        if let Some(ca) = &mut p.outbound_ca {
            fix(ca);
        }
    }
    for u in config.upstreams.values_mut() {
        if let Some(tls) = &mut u.tls {
            fix(&mut tls.ca);
        }
    }
    let fix_str = |p: &mut String| {
        if Path::new(p.as_str()).is_relative() {
            *p = base.join(p.as_str()).to_string_lossy().into_owned();
        }
    };
    if config.access_log.path != "stdout" {
        fix_str(&mut config.access_log.path);
    }
    if let Some(p) = &mut config.policy.analytics_path {
        fix_str(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<Loaded, ConfigError> {
        load_str(src, "t.toml".into(), PathBuf::from("."))
    }

    #[test]
    fn relative_log_paths_are_resolved_against_the_configuration_directory() {
        let src = "[access_log]\npath = \"logs/access.log\"\n[policy]\nanalytics_path = \"events.jsonl\"\n";
        let l = load_str(src, "t.toml".into(), PathBuf::from("/etc/sluice")).unwrap();
        assert_eq!(l.config.access_log.path, "/etc/sluice/logs/access.log");
        assert_eq!(
            l.config.policy.analytics_path.as_deref(),
            Some("/etc/sluice/events.jsonl")
        );
        let l = load_str("", "t.toml".into(), PathBuf::from("/etc/sluice")).unwrap();
        assert_eq!(l.config.access_log.path, "stdout");
    }

    #[test]
    fn embedded_default_parses() {
        let l = load(EMBEDDED_DEFAULT).unwrap();
        assert!(!l.config.listeners.is_empty());
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::default();
        assert_eq!(c.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.limits.max_header_bytes, 16 * 1024);
        assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
        assert!(c.gateway.trusted_proxies.is_empty());
        assert!(c.access_log.enabled);
    }

    #[test]
    fn rejects_a_misspelt_key_naming_line_and_path() {
        let err = load("[limits]\nmax_conections = 5\n").err().unwrap();
        let text = err.to_string();
        assert!(
            text.starts_with("t.toml:2: limits.max_conections: unknown field"),
            "{text}"
        );
    }

    #[test]
    fn reports_unset_variables() {
        let err = load("[gateway]\nlog_level = \"${SLUICE_TEST_SURELY_UNSET}\"\n")
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("t.toml:2: environment variable SLUICE_TEST_SURELY_UNSET")
        );
    }

    #[test]
    fn locates_semantic_issues() {
        let l = load("[[routes]]\nname = \"r\"\nupstream = \"nope\"\n").unwrap();
        let path = KeyPath::default().key("routes").index(0).key("upstream");
        let err = l.error(vec![Issue::new(path, "unknown upstream \"nope\"")]);
        assert_eq!(
            err.to_string(),
            "t.toml:3: routes[0].upstream: unknown upstream \"nope\""
        );
    }
}
