//! Which namespaces a RegistryCredential targets: label selector OR explicit list, minus exclusions
//! (names and shell-style globs), minus namespaces annotated `regcred.dev/exclude: "true"`, minus
//! namespaces in deletion. Pure: works on namespace metadata from the cache.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::api::{EXCLUDE_ANNOTATION, RegistryCredentialSpec};

/// The namespace facts that selection depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamespaceFacts<'a> {
    pub(crate) name: &'a str,
    pub(crate) labels: Option<&'a BTreeMap<String, String>>,
    pub(crate) annotations: Option<&'a BTreeMap<String, String>>,
    pub(crate) terminating: bool,
}

/// A `namespaceSelector` that cannot be evaluated (the API server accepts any operator string in
/// a CRD's LabelSelector, so this is checked here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid namespaceSelector: {0}")]
pub(crate) struct SelectorError(String);

/// Compiled selection rules of one RegistryCredential.
#[derive(Debug, Clone)]
pub(crate) struct Selection<'a> {
    selector: Option<&'a LabelSelector>,
    names: &'a [String],
    excludes: &'a [String],
}

impl<'a> Selection<'a> {
    pub(crate) fn new(spec: &'a RegistryCredentialSpec) -> Result<Self, SelectorError> {
        if let Some(selector) = &spec.namespace_selector {
            validate_selector(selector)?;
        }
        Ok(Self {
            selector: spec.namespace_selector.as_ref(),
            names: spec.namespaces.as_deref().unwrap_or_default(),
            excludes: spec.exclude_namespaces.as_deref().unwrap_or_default(),
        })
    }

    /// Whether the namespace is a target.
    pub(crate) fn targets(&self, ns: &NamespaceFacts<'_>) -> bool {
        if ns.terminating || self.excluded(ns) {
            return false;
        }
        match (self.selector, self.names.is_empty()) {
            (None, true) => true,
            (selector, _) => {
                self.names.iter().any(|n| n == ns.name)
                    || selector.is_some_and(|s| selector_matches(s, ns.labels))
            }
        }
    }

    fn excluded(&self, ns: &NamespaceFacts<'_>) -> bool {
        ns.annotations
            .and_then(|a| a.get(EXCLUDE_ANNOTATION))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || self
                .excludes
                .iter()
                .any(|pattern| glob_match(pattern, ns.name))
    }
}

fn validate_selector(selector: &LabelSelector) -> Result<(), SelectorError> {
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError(format!(
                    "operator {} on key {:?} needs at least one value",
                    req.operator, req.key
                )));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError(format!(
                    "operator {} on key {:?} takes no values",
                    req.operator, req.key
                )));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(SelectorError(format!(
                    "unknown operator {other:?} on key {:?} (expected In, NotIn, Exists or DoesNotExist)",
                    req.key
                )));
            }
        }
    }
    Ok(())
}

/// Label selector semantics of Kubernetes: every matchLabels pair and every expression must hold;
/// an empty selector matches everything.
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v))
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|req| requirement_matches(req, get(&req.key)))
}

fn requirement_matches(req: &LabelSelectorRequirement, value: Option<&String>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Shell-style glob: `*` any run of characters, `?` one character, everything else literal.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Position after the last `*` seen and the name position it was tried against.
    let mut backtrack: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi + 1, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match backtrack {
                Some((bp, bn)) => {
                    pi = bp;
                    ni = bn + 1;
                    backtrack = Some((bp, bn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CredentialSource, RegistryCredentialSpec};

    fn spec(
        selector: Option<LabelSelector>,
        names: &[&str],
        excludes: &[&str],
    ) -> RegistryCredentialSpec {
        let list = |v: &[&str]| {
            (!v.is_empty()).then(|| v.iter().map(std::string::ToString::to_string).collect())
        };
        RegistryCredentialSpec {
            source: CredentialSource::default(),
            secret_name: None,
            namespace_selector: selector,
            namespaces: list(names),
            exclude_namespaces: list(excludes),
            service_accounts: vec!["default".into()],
            conflict_policy: Default::default(),
            deletion_policy: Default::default(),
            suspend: false,
            verify: None,
            pod_recovery: Default::default(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ns<'a>(name: &'a str, labels: Option<&'a BTreeMap<String, String>>) -> NamespaceFacts<'a> {
        NamespaceFacts {
            name,
            labels,
            annotations: None,
            terminating: false,
        }
    }

    fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        }
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: (!values.is_empty()).then(|| {
                    values
                        .iter()
                        .map(std::string::ToString::to_string)
                        .collect()
                }),
            }]),
        }
    }

    #[test]
    fn no_selector_and_no_list_selects_every_namespace() {
        let s = spec(None, &[], &[]);
        assert!(Selection::new(&s).unwrap().targets(&ns("anything", None)));
    }

    #[test]
    fn selector_or_list() {
        let s = spec(Some(match_labels(&[("pull", "true")])), &["payments"], &[]);
        let sel = Selection::new(&s).unwrap();
        let yes = labels(&[("pull", "true")]);
        let no = labels(&[("pull", "false")]);
        assert!(sel.targets(&ns("a", Some(&yes))));
        assert!(!sel.targets(&ns("b", Some(&no))));
        assert!(!sel.targets(&ns("c", None)));
        assert!(
            sel.targets(&ns("payments", None)),
            "listed names are targets without labels"
        );
    }

    #[test]
    fn list_only_selects_only_listed() {
        let s = spec(None, &["a"], &[]);
        let sel = Selection::new(&s).unwrap();
        assert!(sel.targets(&ns("a", None)));
        assert!(!sel.targets(&ns("b", None)));
    }

    #[test]
    fn exclusions_win_over_list_and_selector() {
        let s = spec(
            Some(match_labels(&[("pull", "true")])),
            &["kube-system"],
            &["kube-*", "legacy"],
        );
        let sel = Selection::new(&s).unwrap();
        let yes = labels(&[("pull", "true")]);
        assert!(!sel.targets(&ns("kube-system", Some(&yes))));
        assert!(!sel.targets(&ns("legacy", Some(&yes))));
        assert!(
            sel.targets(&ns("kubeflow", Some(&yes))),
            "kube-* needs the dash"
        );
    }

    #[test]
    fn exclude_annotation_and_terminating_win() {
        let s = spec(None, &["a"], &[]);
        let sel = Selection::new(&s).unwrap();
        let ann = labels(&[(EXCLUDE_ANNOTATION, "true")]);
        let mut facts = ns("a", None);
        facts.annotations = Some(&ann);
        assert!(!sel.targets(&facts));
        let other = labels(&[(EXCLUDE_ANNOTATION, "false")]);
        facts.annotations = Some(&other);
        assert!(sel.targets(&facts));
        facts.terminating = true;
        assert!(!sel.targets(&facts));
    }

    #[test]
    fn expressions() {
        let env = labels(&[("env", "prod")]);
        let m =
            |sel: LabelSelector, l: Option<&BTreeMap<String, String>>| selector_matches(&sel, l);
        assert!(m(expr("env", "In", &["prod", "staging"]), Some(&env)));
        assert!(!m(expr("env", "In", &["dev"]), Some(&env)));
        assert!(!m(expr("env", "In", &["prod"]), None));
        assert!(m(expr("env", "NotIn", &["dev"]), Some(&env)));
        assert!(
            m(expr("env", "NotIn", &["dev"]), None),
            "NotIn matches a missing label"
        );
        assert!(m(expr("env", "Exists", &[]), Some(&env)));
        assert!(!m(expr("team", "Exists", &[]), Some(&env)));
        assert!(m(expr("team", "DoesNotExist", &[]), Some(&env)));
        assert!(
            m(LabelSelector::default(), None),
            "empty selector matches everything"
        );
    }

    #[test]
    fn invalid_selectors_are_reported() {
        for sel in [
            expr("a", "Equals", &["x"]),
            expr("a", "In", &[]),
            expr("a", "Exists", &["x"]),
        ] {
            let s = spec(Some(sel), &[], &[]);
            let err = Selection::new(&s).unwrap_err();
            assert!(err.to_string().contains("\"a\""), "{err}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("kube-*", "kube-system"));
        assert!(glob_match("kube-*", "kube-"));
        assert!(!glob_match("kube-*", "kube"));
        assert!(glob_match("*-prod", "team-a-prod"));
        assert!(glob_match("team-?", "team-a"));
        assert!(!glob_match("team-?", "team-ab"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b*", "xxbxxaxx"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**x", "x"));
    }
}
