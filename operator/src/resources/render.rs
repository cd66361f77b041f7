//! The template registry: every manifest template under `templates/`, compiled into the
//! binary and registered once, and the one function that turns a template and its
//! context into a typed Kubernetes object.
//!
//! Values reach the YAML only through the `json` helper, which writes them as JSON
//! (a subset of YAML): a string with a colon, a quote or a newline cannot break the
//! document, and maps and lists render in one line without indentation games.

use std::sync::LazyLock;

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderError, RenderErrorReason,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ResourceError;

/// A template compiled into the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) name: &'static str,
    source: &'static str,
}

macro_rules! template {
    ($name:literal) => {
        Template { name: $name, source: include_str!(concat!("../../../templates/", $name, ".yaml")) }
    };
}

pub(crate) const ETCD_SERVICE: Template = template!("etcd-service");
pub(crate) const ETCD_STATEFULSET: Template = template!("etcd-statefulset");
pub(crate) const ETCD_NETWORK_POLICY: Template = template!("etcd-network-policy");
pub(crate) const APISERVER_SERVICE: Template = template!("apiserver-service");
pub(crate) const APISERVER_CONFIG: Template = template!("apiserver-config");
pub(crate) const APISERVER_DEPLOYMENT: Template = template!("apiserver-deployment");
pub(crate) const LEADER_ELECTED_DEPLOYMENT: Template = template!("leader-elected-deployment");
pub(crate) const SECRET: Template = template!("secret");
pub(crate) const BACKUP_CRONJOB: Template = template!("backup-cronjob");

const TEMPLATES: [Template; 9] = [
    ETCD_SERVICE,
    ETCD_STATEFULSET,
    ETCD_NETWORK_POLICY,
    APISERVER_SERVICE,
    APISERVER_CONFIG,
    APISERVER_DEPLOYMENT,
    LEADER_ELECTED_DEPLOYMENT,
    SECRET,
    BACKUP_CRONJOB,
];

/// Fragments shared by several templates, used as `{{> name}}`.
const PARTIALS: [(&str, &str); 4] = [
    ("metadata", include_str!("../../../templates/partials/metadata.yaml")),
    ("pod-security-context", include_str!("../../../templates/partials/pod-security-context.yaml")),
    (
        "container-security-context",
        include_str!("../../../templates/partials/container-security-context.yaml"),
    ),
    ("projected-files", include_str!("../../../templates/partials/projected-files.yaml")),
];

/// Registered once per process. A parse error is kept as text (the registry must be
/// `Sync`) and reported by every render, so a broken template fails the unit tests
/// instead of panicking the operator.
static REGISTRY: LazyLock<Result<Handlebars<'static>, String>> = LazyLock::new(build_registry);

fn build_registry() -> Result<Handlebars<'static>, String> {
    let mut registry = Handlebars::new();
    // A misspelt variable is an error, not an empty string in a manifest.
    registry.set_strict_mode(true);
    // Output is YAML, not HTML; values are quoted by the `json` helper instead.
    registry.register_escape_fn(handlebars::no_escape);
    registry.register_helper("json", Box::new(json_helper));
    for (name, source) in PARTIALS {
        registry.register_partial(name, source).map_err(|error| format!("partial {name}: {error}"))?;
    }
    for template in TEMPLATES {
        registry
            .register_template_string(template.name, template.source)
            .map_err(|error| format!("template {}: {error}", template.name))?;
    }
    Ok(registry)
}

/// `{{json value}}`: the value as compact JSON. Fails on a missing value, which the
/// strict mode alone does not catch for helper parameters.
fn json_helper(
    helper: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let param = helper.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex("json", 0))?;
    if param.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(param.relative_path().cloned()).into());
    }
    let text = serde_json::to_string(param.value()).map_err(RenderErrorReason::SerdeError)?;
    out.write(&text)?;
    Ok(())
}

/// Renders `template` with `context` to YAML text.
pub(crate) fn render_text(template: Template, context: &impl Serialize) -> Result<String, ResourceError> {
    let registry = REGISTRY.as_ref().map_err(|message| ResourceError::TemplateRegistry(message.clone()))?;
    registry
        .render(template.name, context)
        .map_err(|source: RenderError| ResourceError::Render { template: template.name, source })
}

/// Renders `template` with `context` and reads the YAML into `T`.
pub(crate) fn render<T: DeserializeOwned + Serialize>(
    template: Template,
    context: &impl Serialize,
) -> Result<T, ResourceError> {
    let yaml = render_text(template, context)?;
    let object: T = serde_yaml_ng::from_str(&yaml)
        .map_err(|source| ResourceError::Decode { template: template.name, source })?;
    #[cfg(test)]
    tests::assert_nothing_dropped(template, &yaml, &object);
    Ok(object)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// k8s-openapi ignores unknown fields, so a misspelt key in a template would vanish
    /// silently. Every render in a test checks that the typed object carries exactly
    /// what the YAML said.
    pub(crate) fn assert_nothing_dropped<T: Serialize>(template: Template, yaml: &str, object: &T) {
        let rendered: serde_json::Value =
            serde_yaml_ng::from_str(yaml).expect("rendered YAML parses as a plain value");
        let typed = serde_json::to_value(object).expect("typed object serializes");
        let mut differences = Vec::new();
        differing_paths(&rendered, &typed, "", &mut differences);
        assert!(
            differences.is_empty(),
            "template {}: the rendered YAML and its Kubernetes type differ at {differences:?} (typo?)",
            template.name
        );
    }

    fn differing_paths(
        rendered: &serde_json::Value,
        typed: &serde_json::Value,
        path: &str,
        out: &mut Vec<String>,
    ) {
        use serde_json::Value;
        match (rendered, typed) {
            (Value::Object(left), Value::Object(right)) => {
                let keys: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
                for key in keys {
                    let child = format!("{path}.{key}");
                    match (left.get(key), right.get(key)) {
                        (Some(l), Some(r)) => differing_paths(l, r, &child, out),
                        (Some(_), None) => out.push(format!("{child} (only in the template)")),
                        (None, _) => out.push(format!("{child} (only in the typed object)")),
                    }
                }
            }
            (Value::Array(left), Value::Array(right)) if left.len() == right.len() => {
                for (index, (l, r)) in left.iter().zip(right).enumerate() {
                    differing_paths(l, r, &format!("{path}[{index}]"), out);
                }
            }
            (left, right) if left != right => out.push(format!("{path}: {left} != {right}")),
            _ => {}
        }
    }

    #[test]
    fn every_template_and_partial_compiles() {
        if let Err(message) = REGISTRY.as_ref() {
            panic!("{message}");
        }
    }

    /// A context for the `secret` template with every variable it reads.
    fn secret_context(name: &str, label_value: &str, data_value: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {
                "name": name,
                "namespace": "tenants",
                "labels": {"app.kubernetes.io/name": label_value},
                "owner": {"api_version": "nestor.dev/v1alpha1", "kind": "TenantCluster", "name": "t", "uid": "u"},
            },
            "type": "Opaque",
            "immutable": false,
            "data": {"key": data_value},
        })
    }

    #[test]
    fn json_helper_quotes_strings_that_would_break_yaml() {
        let hostile_name = "a: b\n- c";
        let hostile_label = "\"quoted\" # not a comment";
        let hostile_data = "{{not a template}}\n  indented: true";
        let text =
            render_text(SECRET, &secret_context(hostile_name, hostile_label, hostile_data)).expect("renders");
        let parsed: serde_json::Value = serde_yaml_ng::from_str(&text).expect("still valid YAML");
        assert_eq!(parsed["metadata"]["name"], hostile_name);
        assert_eq!(parsed["metadata"]["labels"]["app.kubernetes.io/name"], hostile_label);
        assert_eq!(parsed["data"]["key"], hostile_data);
        assert_eq!(parsed["type"], "Opaque");
    }

    #[test]
    fn missing_variable_is_an_error() {
        let mut context = secret_context("s", "l", "d");
        context.as_object_mut().expect("an object").remove("type");
        let error = render_text(SECRET, &context).expect_err("type is missing");
        assert!(matches!(error, ResourceError::Render { template: "secret", .. }), "{error}");
    }
}
