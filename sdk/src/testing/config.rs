//! Configurations written in TOML, as in the gateway's configuration file.

/// Converts a TOML table body (`header = "x-api-key"`, the contents of a route policy's
/// `config`) to the JSON the component's `init` receives.
///
/// # Errors
/// The TOML parser's message.
pub fn toml_config(table: &str) -> Result<serde_json::Value, String> {
    let value: toml::Table = toml::from_str(table).map_err(|e| e.to_string())?;
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// The `config` of every `[[routes.policies]]` entry for `plugin` in the ` ```toml `
/// blocks of a README, as JSON: lets a plugin's tests check that its documented
/// examples are accepted.
///
/// ```
/// let readme = "```toml\n[[routes.policies]]\nplugin = \"p\"\nconfig = { a = 1 }\n```\n";
/// let configs = sluice_sdk::testing::readme_configs(readme, "p");
/// assert_eq!(configs, vec![sluice_sdk::testing::json!({ "a": 1 })]);
/// ```
///
/// # Panics
/// When a TOML block does not parse (the README is wrong).
pub fn readme_configs(readme: &str, plugin: &str) -> Vec<serde_json::Value> {
    let mut configs = Vec::new();
    for block in readme.split("```toml\n").skip(1) {
        let body = block.split("```").next().unwrap_or_default();
        let doc: toml::Table = toml::from_str(body)
            .unwrap_or_else(|e| panic!("README TOML block does not parse: {e}\n{body}"));
        let routes = match doc.get("routes") {
            Some(toml::Value::Array(routes)) => routes.clone(),
            Some(table @ toml::Value::Table(_)) => vec![table.clone()],
            _ => Vec::new(),
        };
        for route in routes {
            let Some(toml::Value::Array(policies)) = route.get("policies") else {
                continue;
            };
            for policy in policies {
                if policy.get("plugin").and_then(toml::Value::as_str) == Some(plugin) {
                    let config = policy
                        .get("config")
                        .cloned()
                        .unwrap_or(toml::Value::Table(toml::Table::new()));
                    configs.push(serde_json::to_value(config).expect("TOML is valid JSON"));
                }
            }
        }
    }
    configs
}
