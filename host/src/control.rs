//! Configuration changes: the file (`gateway.toml`, re-read on SIGHUP) plus the resources
//! managed through the admin API (kept in the store) compose the effective configuration.
//!
//! Every change — a file reload, an API write, a plugin upload — builds a complete new
//! snapshot (routes, upstreams, every policy instantiated and `init`ed) from the composed
//! configuration; only when that succeeds is the change stored (API writes) and the snapshot
//! swapped in atomically. A change that fails is rejected whole and nothing is stored.
//! Changes are serialised; requests in flight finish on the snapshot they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{self, Config, Issue, KeyPath, Loaded};
use crate::gateway::{Source, load_config};
use crate::policy::PolicyEnv;
use crate::proxy::Shared;
use crate::snapshot::Snapshot;
use crate::state::{Db, Managed, ManagedPlugin, PluginVersion};

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The resulting configuration is invalid (nothing changed).
    #[error("invalid configuration")]
    Invalid(Vec<(String, String)>),
    /// The store could not be read or written (nothing changed).
    #[error("store: {0}")]
    Store(String),
}

impl ApplyError {
    fn invalid(issues: Vec<Issue>) -> Self {
        Self::Invalid(
            issues
                .into_iter()
                .map(|i| (i.path.to_string(), i.message))
                .collect(),
        )
    }
}

/// Where uploaded components are materialised: `<state dir>/plugins/<sha256>.wasm`.
pub fn plugin_dir(state: &config::StateSettings) -> PathBuf {
    state
        .path
        .parent()
        .unwrap_or(Path::new("."))
        .join("plugins")
}

/// Whether `name` may name a resource (plugin, route, upstream, consumer, token): 1 to 128
/// ASCII letters, digits, `-`, `_` or `.`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The plugin name of a policy's `plugin` reference (`name`, `name@3`, `name@<sha256>`).
pub fn plugin_base(reference: &str) -> &str {
    reference.split('@').next().unwrap_or(reference)
}

/// The effective configuration: `file` plus `managed`. A managed resource may not reuse the
/// name of one in the file. A route's policy may pin an uploaded plugin's version with
/// `plugin = "name@3"` or a digest (`"name@sha256:ab12…"`, at least 8 hex digits); unpinned
/// references use the active version. When `trusted_keys` (`[admin] trusted_keys`) are
/// set, an uploaded plugin's version is used only if its stored signature verifies against
/// one of them (an unsigned upload, or one signed by a key since removed, is not).
pub fn compose(
    file: &Config,
    managed: &Managed,
    plugins: &Path,
    trusted_keys: &[String],
) -> Result<Config, Vec<Issue>> {
    let mut out = file.clone();
    let mut issues = Vec::new();
    // The admin API's rule for names (uploads are checked by the API): a plugin's name is its
    // kv namespace and the first part of a pinned reference (`name@3`), so `@`, `:` or `}`
    // in it would alias another's.
    for name in file.plugins.keys() {
        if !is_valid_name(name) {
            issues.push(Issue::new(
                KeyPath::default().key("plugins").key(name),
                "a plugin name has 1 to 128 letters, digits, '-', '_' or '.'",
            ));
        }
    }
    for (i, r) in managed.routes.iter().enumerate() {
        let at = KeyPath::default()
            .key("routes")
            .index(file.routes.len() + i);
        match serde_json::from_value::<config::Route>(r.clone()) {
            Ok(route) if file.routes.iter().any(|f| f.name == route.name) => issues.push(
                Issue::new(at, format!("route {:?} is defined in the file", route.name)),
            ),
            Ok(route) => out.routes.push(route),
            Err(e) => issues.push(Issue::new(at, e.to_string())),
        }
    }
    for (name, u) in &managed.upstreams {
        let at = KeyPath::default().key("upstreams").key(name);
        if file.upstreams.contains_key(name) {
            issues.push(Issue::new(at, "this upstream is defined in the file"));
            continue;
        }
        match serde_json::from_value::<config::Upstream>(u.clone()) {
            Ok(up) => {
                out.upstreams.insert(name.clone(), up);
            }
            Err(e) => issues.push(Issue::new(at, e.to_string())),
        }
    }
    for (name, p) in &managed.plugins {
        let at = KeyPath::default().key("plugins").key(name);
        if file.plugins.contains_key(name) {
            issues.push(Issue::new(at, "this plugin is defined in the file"));
            continue;
        }
        let Some(v) = p.active_version() else {
            continue;
        };
        match version_entry(name, p, v, plugins, trusted_keys, false) {
            Ok(plugin) => {
                out.plugins.insert(name.clone(), plugin);
            }
            Err(why) => issues.push(Issue::new(at, why)),
        }
    }
    pin_versions(&mut out, managed, plugins, trusted_keys, &mut issues);
    let consumers = stored_consumers(managed);
    for r in &mut out.routes {
        for p in &mut r.policies {
            for (_, v) in p.config.iter_mut() {
                if v.as_str() == Some(CONSUMERS_MARKER) {
                    *v = consumers.clone();
                }
            }
        }
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Whether version `v` of uploaded plugin `name` may be used under `trusted_keys` (any
/// version when none are set); why not otherwise.
fn check_trusted(trusted_keys: &[String], name: &str, v: &PluginVersion) -> Result<(), String> {
    if trusted_keys.is_empty() || v.trusted_by(trusted_keys) {
        return Ok(());
    }
    let how = match (&v.signature, v.signed) {
        (Some(_), _) => "was signed by a key no longer in admin.trusted_keys",
        // Stored before versions kept their signature: it cannot be checked again.
        (None, true) => "was signed before signatures were kept, so it cannot be checked again",
        (None, false) => "was uploaded unsigned",
    };
    Err(format!(
        "version {} of plugin {name:?} {how}; only versions signed by a trusted key are \
         used: upload a signed version or roll back to one",
        v.version
    ))
}

/// The `[plugins]` entry of version `v` of the uploaded plugin `name`, if it may be used
/// (see [`check_trusted`]). `pinned` names the version whatever the stored settings say.
fn version_entry(
    name: &str,
    m: &ManagedPlugin,
    v: &PluginVersion,
    plugins: &Path,
    trusted_keys: &[String],
    pinned: bool,
) -> Result<config::Plugin, String> {
    check_trusted(trusted_keys, name, v)?;
    let mut settings = m.settings.clone();
    let path = plugins.join(format!("{}.wasm", v.digest));
    settings.insert("path".into(), path.display().to_string().into());
    if pinned || !settings.contains_key("version") {
        settings.insert("version".into(), v.version.to_string().into());
    }
    serde_json::from_value::<config::Plugin>(settings.into()).map_err(|e| e.to_string())
}

/// Adds a plugin entry `name@ref` for every pinned reference a route makes.
fn pin_versions(
    out: &mut Config,
    managed: &Managed,
    plugins: &Path,
    trusted_keys: &[String],
    issues: &mut Vec<Issue>,
) {
    let mut pinned = std::collections::BTreeMap::new();
    for (i, r) in out.routes.iter().enumerate() {
        for (j, p) in r.policies.iter().enumerate() {
            let Some((name, wanted)) = p.plugin.split_once('@') else {
                continue;
            };
            let at = KeyPath::default()
                .key("routes")
                .index(i)
                .key("policies")
                .index(j)
                .key("plugin");
            let Some(m) = managed.plugins.get(name) else {
                issues.push(Issue::new(
                    at,
                    format!(
                        "versions can be pinned only for uploaded plugins; {name:?} is not one"
                    ),
                ));
                continue;
            };
            let digest = wanted.strip_prefix("sha256:").unwrap_or(wanted);
            let found = match wanted.parse::<u32>() {
                Ok(n) => m.versions.iter().find(|v| v.version == n),
                Err(_) if digest.len() >= 8 => {
                    m.versions.iter().find(|v| v.digest.starts_with(digest))
                }
                Err(_) => None,
            };
            let Some(v) = found else {
                issues.push(Issue::new(
                    at,
                    format!("plugin {name:?} has no version {wanted:?}"),
                ));
                continue;
            };
            if pinned.contains_key(&p.plugin) {
                continue;
            }
            match version_entry(name, m, v, plugins, trusted_keys, true) {
                Ok(plugin) => {
                    pinned.insert(p.plugin.clone(), plugin);
                }
                Err(why) => issues.push(Issue::new(at, why)),
            }
        }
    }
    out.plugins.extend(pinned);
}

/// A policy configuration value equal to this is replaced by the stored consumers' API-key
/// credentials, `[{ name, key_sha256 }, …]` (the shape `key-auth`'s `consumers` takes).
pub const CONSUMERS_MARKER: &str = "@consumers";

fn stored_consumers(managed: &Managed) -> toml::Value {
    let mut list = Vec::new();
    for (name, c) in &managed.consumers {
        for k in c.credentials.iter().filter(|k| k.kind == "key") {
            let mut t = toml::Table::new();
            t.insert("name".into(), name.clone().into());
            t.insert("key_sha256".into(), k.sha256.clone().into());
            list.push(toml::Value::Table(t));
        }
    }
    toml::Value::Array(list)
}

/// Writes the components `config` loads from `dir` (active and pinned versions) from the
/// store when absent.
pub fn materialise_plugins(
    db: &Db,
    managed: &Managed,
    config: &Config,
    dir: &Path,
) -> Result<(), String> {
    let needed = managed
        .plugins
        .values()
        .flat_map(|p| p.versions.iter())
        .filter(|v| {
            let path = dir.join(format!("{}.wasm", v.digest));
            config.plugins.values().any(|p| p.path == path)
        });
    for v in needed {
        let path = dir.join(format!("{}.wasm", v.digest));
        if path.exists() {
            continue;
        }
        let bytes = db
            .blob(&v.digest)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("component {} is missing from the store", v.digest))?;
        write_component(dir, &v.digest, &bytes)?;
    }
    Ok(())
}

/// Writes a component file atomically (owner-only, in an owner-only directory).
pub fn write_component(dir: &Path, digest: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    crate::private::create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{digest}.wasm"));
    crate::private::write_private_file(&path, bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Builds a snapshot of the file configuration composed with the stored resources
/// (`trusted_keys`: see [`compose`]).
pub async fn build_composed(
    loaded: &Loaded,
    managed: &Managed,
    env: Arc<PolicyEnv>,
    trusted_keys: &[String],
) -> Result<Snapshot, Vec<Issue>> {
    let dir = plugin_dir(&loaded.config.state);
    let config = compose(&loaded.config, managed, &dir, trusted_keys)?;
    if let Err(e) = materialise_plugins(&env.store.db, managed, &config, &dir) {
        return Err(vec![Issue::new(KeyPath::default().key("plugins"), e)]);
    }
    Snapshot::build(&config, env).await
}

/// The settings read once at start (the runtime, the log filter, the connection cap, the
/// access-log file, the policy engine, the stores, the admin API) that differ between `old`
/// and `new`.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($name:literal: $($field:ident).+;)+) => {$(
            if format!("{:?}", old.$($field).+) != format!("{:?}", new.$($field).+) {
                changed.push($name);
            }
        )+};
    }
    compare! {
        "gateway.workers": gateway.workers;
        "gateway.log_level": gateway.log_level;
        "limits.max_connections": limits.max_connections;
        "access_log.path": access_log.path;
        "[policy]": policy;
        "[state]": state;
        "[redis]": redis;
        "[admin]": admin;
    }
    changed
}

/// The change coordinator of a running gateway.
pub struct Control {
    source: Source,
    shared: Arc<Shared>,
    file: std::sync::Mutex<Arc<Loaded>>,
    /// `[admin]` as the gateway started with it: restart-only, like the listeners (a reload
    /// that drops `trusted_keys` must not turn signature checks off unnoticed).
    admin: config::AdminSettings,
    /// The admin API's TLS acceptor, rebuilt from `[admin] tls`'s files on every reload, so
    /// that certificates renewed in place are served, as the listeners' are.
    admin_tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Control {
    /// A coordinator for the gateway serving `shared`, whose file configuration is `loaded`.
    pub fn new(source: Source, shared: Arc<Shared>, loaded: Loaded) -> Arc<Self> {
        Arc::new(Self {
            source,
            shared,
            admin: loaded.config.admin.clone(),
            admin_tls: arc_swap::ArcSwapOption::empty(),
            file: std::sync::Mutex::new(Arc::new(loaded)),
            lock: Arc::default(),
        })
    }

    /// The live snapshot.
    pub fn live(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The store.
    pub fn db(&self) -> Db {
        self.live().policy_env.store.db.clone()
    }

    /// Where uploaded components are materialised.
    pub fn plugin_dir(&self) -> PathBuf {
        plugin_dir(&self.loaded().config.state)
    }

    /// The file configuration in force (the last one loaded or reloaded).
    pub fn loaded(&self) -> Arc<Loaded> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies `edit` to the stored resources: builds the whole new configuration, stores it
    /// (with `blobs`) only if it is valid, then swaps it in. An edit that refuses (its own
    /// error) or changes nothing stores nothing. Returns the edit's value and the revision.
    pub async fn change<T, E>(
        &self,
        edit: impl FnOnce(&mut Managed) -> Result<T, E>,
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<Result<(T, u64), E>, ApplyError> {
        self.change_at(|m, _| edit(m), blobs).await
    }

    /// [`change`](Self::change), with the revision the edit starts from passed to it (for
    /// `If-Match` on the whole configuration).
    pub async fn change_at<T, E>(
        &self,
        edit: impl FnOnce(&mut Managed, u64) -> Result<T, E>,
        blobs: Vec<(String, Vec<u8>)>,
    ) -> Result<Result<(T, u64), E>, ApplyError> {
        let serial = self.lock.clone().lock_owned().await;
        let db = self.db();
        let (before, revision) = db.managed().map_err(|e| ApplyError::Store(e.to_string()))?;
        let mut managed = before.clone();
        let out = match edit(&mut managed, revision) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        if managed == before && blobs.is_empty() {
            return Ok(Ok((out, revision)));
        }
        // What is stored must read back: a document nested past the JSON reader's depth
        // limit (a policy `config` 120 tables deep) would make the store unreadable, and
        // with it every later change, reload and start.
        let json = crate::state::stored_form(&managed)
            .map_err(|e| ApplyError::Invalid(vec![(String::new(), e)]))?;
        let loaded = self.loaded();
        let dir = plugin_dir(&loaded.config.state);
        // Files and the store are written off the request workers (fsyncs).
        let blobs = Arc::new(blobs);
        let written = blobs.clone();
        tokio::task::spawn_blocking(move || {
            written
                .iter()
                .try_for_each(|(digest, bytes)| write_component(&dir, digest, bytes).map(drop))
        })
        .await
        .map_err(|e| ApplyError::Store(e.to_string()))?
        .map_err(ApplyError::Store)?;
        let env = self.live().policy_env.clone();
        let next = build_composed(&loaded, &managed, env, &self.admin.trusted_keys)
            .await
            .map_err(ApplyError::invalid)?;
        // Stored, then swapped in, on a task of its own that holds the serialisation lock:
        // a caller that goes away (the client disconnects) cannot leave a stored change
        // unapplied, nor let another change in between.
        let shared = self.shared.clone();
        let commit = tokio::spawn(async move {
            let _serial = serial;
            let revision = db
                .off_workers(move |db| db.put_managed(&managed, &json, revision, &blobs))
                .await
                .map_err(|e| ApplyError::Store(e.to_string()))?;
            next.activate(Some(&shared.snapshot.load()));
            shared.snapshot.store(Arc::new(next));
            tracing::info!(revision, "configuration changed through the admin API");
            Ok::<_, ApplyError>(revision)
        });
        let revision = commit
            .await
            .map_err(|e| ApplyError::Store(e.to_string()))??;
        Ok(Ok((out, revision)))
    }

    /// The stored resources and their revision.
    pub fn managed(&self) -> Result<(Managed, u64), ApplyError> {
        self.db()
            .managed()
            .map_err(|e| ApplyError::Store(e.to_string()))
    }

    /// The file configuration's route, upstream and plugin names (read-only to the API).
    pub fn file_names(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let l = self.loaded();
        let c = &l.config;
        (
            c.routes.iter().map(|r| r.name.clone()).collect(),
            c.upstreams.keys().cloned().collect(),
            c.plugins.keys().cloned().collect(),
        )
    }

    /// The admin API's TLS acceptor (`None`: plaintext).
    pub fn admin_tls(&self) -> Option<Arc<tokio_rustls::TlsAcceptor>> {
        self.admin_tls.load_full()
    }

    /// Sets the admin API's TLS acceptor (at start).
    pub fn set_admin_tls(&self, tls: Option<tokio_rustls::TlsAcceptor>) {
        self.admin_tls.store(tls.map(Arc::new));
    }

    /// The admin settings the gateway started with.
    pub fn admin_settings(&self) -> &config::AdminSettings {
        &self.admin
    }

    /// Re-reads the file and swaps the composed configuration in if it is valid and keeps
    /// the same listeners (SIGHUP).
    pub async fn reload_file(&self) {
        let _serial = self.lock.lock().await;
        let env = self.live().policy_env.clone();
        let result = async {
            let loaded = load_config(&self.source).map_err(|e| e.to_string())?;
            let (managed, _) = env.store.db.managed().map_err(|e| e.to_string())?;
            let snap = build_composed(&loaded, &managed, env.clone(), &self.admin.trusted_keys)
                .await
                .map_err(|issues| loaded.error(issues).to_string())?;
            Ok::<_, String>((loaded, snap))
        }
        .await;
        let (loaded, next) = match result {
            Ok(x) => x,
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(problem = %line, "reload rejected; the previous configuration keeps serving");
                }
                return;
            }
        };
        let current = self.live();
        let same = current.listeners.len() == next.listeners.len()
            && current.listeners.iter().zip(&next.listeners).all(|(a, b)| {
                a.name == b.name && a.bind == b.bind && a.tls.is_some() == b.tls.is_some()
            });
        if !same {
            tracing::error!(
                "reload rejected: listeners cannot change without a restart; the previous configuration keeps serving"
            );
            return;
        }
        let mut later = restart_only_changes(&current.config, &next.config);
        // Without a writer started at start-up, the access log cannot be turned on later.
        if next.config.access_log.enabled && !self.shared.access_log.enabled() {
            later.push("access_log.enabled");
        }
        if !later.is_empty() {
            tracing::warn!(
                settings = %later.join(", "),
                "these changed settings take effect at the next restart; the rest is reloaded"
            );
        }
        next.activate(Some(&current));
        self.shared.snapshot.store(Arc::new(next));
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        if self.admin_tls().is_some() {
            match crate::admin::check_settings(&self.admin) {
                Ok(tls) => self.set_admin_tls(tls),
                Err(problems) => tracing::warn!(
                    ?problems,
                    "admin TLS files not reloaded; the admin API keeps its certificates"
                ),
            }
        }
        tracing::info!("configuration reloaded");
    }
}
