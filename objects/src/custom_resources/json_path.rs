//! The JSONPath expressions CustomResourceDefinitions carry: printer
//! columns' `jsonPath` (`.status.replicas`,
//! `.status.conditions[?(@.type=="Ready")].status`) and the `scale`
//! subresource's `specReplicasPath`, `statusReplicasPath` and
//! `labelSelectorPath` (`.spec.replicas`). Kubernetes evaluates them with
//! client-go's `jsonpath` inside `{}`; a CRD may only use the simple
//! forms, which are what is read here: fields (`.a`, `['a.b']`), indices
//! (`[0]`, `[-1]`), every item (`[*]`), and filters comparing a field
//! with a literal (`[?(@.type=="Ready")]`, `!=`, or a field's presence).

use serde_json::Value;

/// A parsed path: the steps from the object's root.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    /// The fields under `@` compared.
    field: Vec<String>,
    /// `None`: the field is present.
    compare: Option<(bool, Value)>,
}

/// Why a path cannot be read: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} is not a JSON path this server reads: {reason} (at character {at})")]
pub struct JsonPathError {
    pub path: String,
    pub at: usize,
    pub reason: &'static str,
}

/// The longest path read, in bytes.
const MAX_PATH: usize = 1024;

impl JsonPath {
    /// Parses a path that starts with `.` (`{}` around it is accepted too).
    pub fn parse(text: &str) -> Result<JsonPath, JsonPathError> {
        let error = |at: usize, reason: &'static str| JsonPathError {
            path: text.to_owned(),
            at,
            reason,
        };
        if text.len() > MAX_PATH {
            return Err(error(MAX_PATH, "longer than 1024 bytes"));
        }
        let inner = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        let offset = if inner.len() == text.len() { 0 } else { 1 };
        let bytes = inner.as_bytes();
        if bytes.first() != Some(&b'.') {
            return Err(error(offset, "it must start with '.'"));
        }
        let mut steps = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < bytes.len() && !matches!(bytes[end], b'.' | b'[') {
                        end += 1;
                    }
                    if end == start {
                        // `.` alone is the root; `..` (recursive descent) is
                        // not a simple path.
                        if bytes.len() == 1 {
                            break;
                        }
                        return Err(error(offset + i, "an empty field name"));
                    }
                    steps.push(Step::Field(inner[start..end].to_owned()));
                    i = end;
                }
                b'[' => {
                    let close = find_close(bytes, i)
                        .ok_or_else(|| error(offset + i, "a '[' without its ']'"))?;
                    let body = inner[i + 1..close].trim();
                    steps.push(bracket(body).map_err(|reason| error(offset + i, reason))?);
                    i = close + 1;
                }
                _ => return Err(error(offset + i, "expected '.' or '['")),
            }
        }
        Ok(JsonPath { steps })
    }

    /// Every value the path selects in `root`, in document order.
    pub fn find<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        let mut current = vec![root];
        for step in &self.steps {
            let mut next = Vec::new();
            for value in current {
                match step {
                    Step::Field(name) => next.extend(value.get(name.as_str())),
                    Step::Index(index) => {
                        if let Some(items) = value.as_array() {
                            let at = if *index < 0 {
                                usize::try_from(-index)
                                    .ok()
                                    .and_then(|back| items.len().checked_sub(back))
                            } else {
                                usize::try_from(*index).ok()
                            };
                            next.extend(at.and_then(|at| items.get(at)));
                        }
                    }
                    Step::All => match value {
                        Value::Array(items) => next.extend(items.iter()),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter(filter) => {
                        if let Some(items) = value.as_array() {
                            next.extend(items.iter().filter(|item| filter.keeps(item)));
                        }
                    }
                }
            }
            current = next;
        }
        current
    }

    /// The first value the path selects, if any.
    pub fn first<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.find(root).into_iter().next()
    }

    /// The fields of a path made of fields only (`.spec.replicas` →
    /// `["spec", "replicas"]`), what a scale path must be; `None`
    /// otherwise.
    pub fn fields(&self) -> Option<Vec<&str>> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Field(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl Filter {
    fn keeps(&self, item: &Value) -> bool {
        let mut at = Some(item);
        for field in &self.field {
            at = at.and_then(|v| v.get(field.as_str()));
        }
        match (&self.compare, at) {
            (None, found) => found.is_some_and(|v| !v.is_null()),
            (Some((equal, wanted)), Some(found)) => (found == wanted) == *equal,
            (Some((equal, _)), None) => !equal,
        }
    }
}

/// The index of the `]` closing the `[` at `open`, skipping quoted text.
fn find_close(bytes: &[u8], open: usize) -> Option<usize> {
    let mut quote = None;
    let mut i = open + 1;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b']' => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// What one `[...]` holds.
fn bracket(body: &str) -> Result<Step, &'static str> {
    if body == "*" {
        return Ok(Step::All);
    }
    if let Some(quoted) = unquote(body) {
        return Ok(Step::Field(quoted));
    }
    if let Ok(index) = body.parse::<i64>() {
        return Ok(Step::Index(index));
    }
    let filter = body
        .strip_prefix("?(")
        .and_then(|f| f.strip_suffix(')'))
        .ok_or("expected an index, '*', a quoted field or a filter ?(...)")?
        .trim();
    let (left, compare) = match filter.find("==").or_else(|| filter.find("!=")) {
        Some(at) => {
            let equal = &filter[at..at + 2] == "==";
            let literal = filter[at + 2..].trim();
            let value = unquote(literal)
                .map(Value::from)
                .or_else(|| serde_json::from_str::<Value>(literal).ok())
                .ok_or("a filter compares with a quoted string, a number, true, false or null")?;
            (filter[..at].trim(), Some((equal, value)))
        }
        None => (filter, None),
    };
    let fields = left
        .strip_prefix("@.")
        .ok_or("a filter's field starts with '@.'")?;
    let field: Vec<String> = fields.split('.').map(str::to_owned).collect();
    if field.iter().any(String::is_empty) {
        return Err("an empty field name in a filter");
    }
    Ok(Step::Filter(Filter { field, compare }))
}

/// The text inside single or double quotes, unescaped.
fn unquote(text: &str) -> Option<String> {
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next()?);
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(path: &str, value: &Value) -> Vec<Value> {
        JsonPath::parse(path)
            .unwrap()
            .find(value)
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn fields_indices_and_filters_select_as_client_go_does() {
        let object = json!({
            "spec": {"replicas": 3, "a.b": "dotted"},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]},
        });
        assert_eq!(found(".spec.replicas", &object), [json!(3)]);
        assert_eq!(found("{.spec.replicas}", &object), [json!(3)]);
        assert_eq!(found(".spec['a.b']", &object), [json!("dotted")]);
        assert_eq!(
            found(r#".status.conditions[?(@.type=="Ready")].status"#, &object),
            [json!("True")]
        );
        assert_eq!(
            found(".status.conditions[?(@.type!='Ready')].type", &object),
            [json!("Synced")]
        );
        assert_eq!(
            found(".status.conditions[-1].type", &object),
            [json!("Ready")]
        );
        assert_eq!(found(".status.conditions[*].type", &object).len(), 2);
        assert!(found(".spec.missing", &object).is_empty());
        assert!(found(".status.conditions[5]", &object).is_empty());
        let fields = JsonPath::parse(".spec.replicas").unwrap();
        assert_eq!(fields.fields(), Some(vec!["spec", "replicas"]));
        let filtered = JsonPath::parse(".a[0]").unwrap();
        assert_eq!(filtered.fields(), None);
    }

    #[test]
    fn paths_that_are_not_simple_are_refused_with_where() {
        for bad in ["spec.replicas", ".spec..x", ".a[", ".a[?(@x)]", ".a[b]", ""] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
        let e = JsonPath::parse(".a[").unwrap_err();
        assert_eq!(e.at, 2);
        assert!(e.to_string().contains("without its ']'"), "{e}");
    }
}
