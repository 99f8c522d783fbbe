//! `-l`/`--selector`: kubectl's label-selector syntax (`app=web`,
//! `app!=x`, `tier in (a,b)`, `tier notin (a)`, `key`, `!key`, joined by
//! commas, all of which must hold). The text becomes a Kubernetes
//! `LabelSelector` of `matchExpressions`, which the master's own
//! `objects::selector::matches` then decides, so `-l` means exactly what a
//! Deployment's selector means. The API lists whole kinds, so the client
//! does the filtering.

use skiff_objects::selector;
use skiff_objects::validation::{is_label_key, is_label_name};
use skiff_objects::ObjectExt;
use skiff_proto::api::Object;
use skiff_proto::v1::{LabelSelector, LabelSelectorRequirement};

/// Why a `-l` selector could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad selector {text:?}: {reason}; write terms like app=web, app!=web, 'tier in (a,b)', 'tier notin (a)', key or !key, joined by commas")]
pub struct SelectorError {
    pub text: String,
    pub reason: String,
}

pub type Result<T> = std::result::Result<T, SelectorError>;

/// What a label key looks like, for error messages.
const KEY_SHAPE: &str =
    "an optional DNS prefix and '/', then up to 63 letters, digits, '-', '_' or '.'";

/// What a label value looks like, for error messages.
const VALUE_SHAPE: &str =
    "up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit";

/// A parsed `-l` selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    selector: LabelSelector,
}

impl Selector {
    /// Reads kubectl's selector syntax.
    pub fn parse(text: &str) -> Result<Selector> {
        let fail = |reason: String| SelectorError {
            text: text.to_owned(),
            reason,
        };
        let tokens = tokenize(text).map_err(fail)?;
        let requirements = Parser { tokens, at: 0 }.selector().map_err(fail)?;
        Ok(Selector {
            selector: LabelSelector {
                match_labels: Default::default(),
                match_expressions: requirements,
            },
        })
    }

    /// The selector as the API writes it.
    pub fn label_selector(&self) -> &LabelSelector {
        &self.selector
    }

    /// Whether the object's labels satisfy every term.
    pub fn matches(&self, object: &Object) -> bool {
        selector::matches(&self.selector, &object.meta().labels)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// A key, a value, or the words `in` and `notin`.
    Word(&'a str),
    Not,
    Equals,
    NotEquals,
    Comma,
    Open,
    Close,
    /// `<` or `>`: Kubernetes' numeric comparisons, which label selectors
    /// of objects cannot hold; refused with a message.
    Compare(char),
}

impl Token<'_> {
    fn describe(self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Not => "\"!\"".to_owned(),
            Token::Equals => "\"=\"".to_owned(),
            Token::NotEquals => "\"!=\"".to_owned(),
            Token::Comma => "\",\"".to_owned(),
            Token::Open => "\"(\"".to_owned(),
            Token::Close => "\")\"".to_owned(),
            Token::Compare(c) => format!("\"{c}\""),
        }
    }
}

fn is_special(b: u8) -> bool {
    matches!(b, b'!' | b'=' | b',' | b'(' | b')' | b'<' | b'>') || b.is_ascii_whitespace()
}

/// Splits on the operators and white space. Every special character is
/// ASCII, so the slices between them are whole UTF-8 characters.
fn tokenize(text: &str) -> std::result::Result<Vec<Token<'_>>, String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        let (token, len) = match b {
            _ if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'!' if next == Some(b'=') => (Token::NotEquals, 2),
            b'!' => (Token::Not, 1),
            b'=' if next == Some(b'=') => (Token::Equals, 2),
            b'=' => (Token::Equals, 1),
            b',' => (Token::Comma, 1),
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            b'<' | b'>' => (Token::Compare(char::from(b)), 1),
            _ => {
                let end = bytes[i..]
                    .iter()
                    .position(|&b| is_special(b))
                    .map_or(bytes.len(), |p| i + p);
                (Token::Word(&text[i..end]), end - i)
            }
        };
        tokens.push(token);
        i += len;
    }
    if tokens.is_empty() {
        return Err("it is empty".to_owned());
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    at: usize,
}

/// One term of the selector.
fn term(key: &str, operator: &str, values: Vec<String>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values,
    }
}

/// "expected WHAT, found TOKEN".
fn expected(what: &str, found: Token<'_>) -> String {
    format!("expected {what}, found {}", found.describe())
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.at).copied()
    }

    fn advance(&mut self) -> Option<Token<'a>> {
        let token = self.peek();
        self.at += 1;
        token
    }

    /// term (',' term)*
    fn selector(mut self) -> std::result::Result<Vec<LabelSelectorRequirement>, String> {
        let mut terms = vec![self.term()?];
        loop {
            match self.advance() {
                None => return Ok(terms),
                Some(Token::Comma) => terms.push(self.term()?),
                Some(other) => return Err(expected("\",\" or the end after a term", other)),
            }
        }
    }

    /// `key`, `!key`, `key=value`, `key==value`, `key!=value`,
    /// `key in (values)` or `key notin (values)`.
    fn term(&mut self) -> std::result::Result<LabelSelectorRequirement, String> {
        if self.peek() == Some(Token::Not) {
            self.advance();
            let key = self.key()?;
            return Ok(term(key, "DoesNotExist", Vec::new()));
        }
        let key = self.key()?;
        match self.peek() {
            None | Some(Token::Comma) => Ok(term(key, "Exists", Vec::new())),
            Some(Token::Equals) => {
                self.advance();
                Ok(term(key, "In", vec![self.value()?]))
            }
            Some(Token::NotEquals) => {
                self.advance();
                Ok(term(key, "NotIn", vec![self.value()?]))
            }
            Some(Token::Word("in")) => {
                self.advance();
                Ok(term(key, "In", self.set(key)?))
            }
            Some(Token::Word("notin")) => {
                self.advance();
                Ok(term(key, "NotIn", self.set(key)?))
            }
            Some(Token::Compare(c)) => Err(format!(
                "{key:?}: \"{c}\" compares numbers, which skiff's label selectors do not"
            )),
            Some(other) => Err(format!(
                "after {key:?}: {}",
                expected("=, ==, !=, in, notin, \",\" or the end", other)
            )),
        }
    }

    fn key(&mut self) -> std::result::Result<&'a str, String> {
        match self.advance() {
            Some(Token::Word(key)) if is_label_key(key) => Ok(key),
            Some(Token::Word(key)) => Err(format!("{key:?} is not a label key ({KEY_SHAPE})")),
            Some(other) => Err(expected("a label key", other)),
            None => Err("expected a label key at the end".to_owned()),
        }
    }

    /// The value after `=`, `==` or `!=`: may be empty (`app=`).
    fn value(&mut self) -> std::result::Result<String, String> {
        match self.peek() {
            Some(Token::Word(value)) => {
                self.advance();
                check_value(value)
            }
            None | Some(Token::Comma) => Ok(String::new()),
            Some(other) => Err(expected("a label value", other)),
        }
    }

    /// `(v1, v2, ...)` after `in` or `notin`: at least one value.
    fn set(&mut self, key: &str) -> std::result::Result<Vec<String>, String> {
        let unclosed = || format!("{key:?}: the set of values is not closed with \")\"");
        let in_set = |what: &str, found| format!("{key:?}: {}", expected(what, found));
        if self.advance() != Some(Token::Open) {
            return Err(format!("{key:?}: expected \"(\" after in/notin"));
        }
        let mut values = Vec::new();
        loop {
            match self.advance() {
                Some(Token::Word(value)) => values.push(check_value(value)?),
                Some(Token::Close) if !values.is_empty() => return Ok(values),
                Some(Token::Close) => return Err(format!("{key:?}: the set of values is empty")),
                Some(other) => return Err(in_set("a value", other)),
                None => return Err(unclosed()),
            }
            match self.advance() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                Some(other) => return Err(in_set("\",\" or \")\"", other)),
                None => return Err(unclosed()),
            }
        }
    }
}

fn check_value(value: &str) -> std::result::Result<String, String> {
    if is_label_name(value) {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a label value ({VALUE_SHAPE})"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use skiff_objects::IntoObject;
    use skiff_proto::v1::{ObjectMeta, Pod};

    use super::*;

    fn pod(labels: &[(&str, &str)]) -> Object {
        Pod {
            metadata: Some(ObjectMeta {
                name: "p".into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .into_object()
    }

    fn terms(text: &str) -> Vec<(String, String, Vec<String>)> {
        Selector::parse(text)
            .unwrap()
            .label_selector()
            .match_expressions
            .iter()
            .map(|r| (r.key.clone(), r.operator.clone(), r.values.clone()))
            .collect()
    }

    fn want(key: &str, operator: &str, values: &[&str]) -> (String, String, Vec<String>) {
        (
            key.to_owned(),
            operator.to_owned(),
            values.iter().map(|v| v.to_string()).collect(),
        )
    }

    #[test]
    fn every_operator_is_read() {
        assert_eq!(terms("app=web"), vec![want("app", "In", &["web"])]);
        assert_eq!(terms("app==web"), vec![want("app", "In", &["web"])]);
        assert_eq!(terms("app!=web"), vec![want("app", "NotIn", &["web"])]);
        assert_eq!(terms("app="), vec![want("app", "In", &[""])]);
        assert_eq!(
            terms(" tier in (a, b) ,!canary, example.com/team ,x notin(c)"),
            vec![
                want("tier", "In", &["a", "b"]),
                want("canary", "DoesNotExist", &[]),
                want("example.com/team", "Exists", &[]),
                want("x", "NotIn", &["c"]),
            ]
        );
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for (text, needle) in [
            ("", "empty"),
            ("  ", "empty"),
            ("app=web,", "expected a label key at the end"),
            ("tier in (a,b", "not closed"),
            ("tier in ()", "empty"),
            ("tier in a", "expected \"(\""),
            ("tier notin (a b)", "expected \",\" or \")\""),
            ("replicas>2", "compares numbers"),
            ("app=web=x", "expected \",\" or the end"),
            ("app web", "after \"app\""),
            ("-app=web", "not a label key"),
            ("app=-web", "not a label value"),
            ("=web", "expected a label key"),
        ] {
            let e = Selector::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {needle:?} not in {e}");
            assert!(e.contains(&format!("{text:?}")), "{e}");
        }
    }

    #[test]
    fn matching_follows_kubernetes() {
        let web = pod(&[("app", "web"), ("tier", "front")]);
        let api = pod(&[("app", "api")]);
        let bare = pod(&[]);
        let cases = [
            ("app=web", [true, false, false]),
            ("app!=web", [false, true, true]),
            ("tier in (front,edge)", [true, false, false]),
            ("tier notin (front)", [false, true, true]),
            ("app", [true, true, false]),
            ("!tier", [false, true, true]),
            ("app,!tier", [false, true, false]),
            ("app=web,tier=back", [false, false, false]),
        ];
        for (text, expected) in cases {
            let selector = Selector::parse(text).unwrap();
            let got = [&web, &api, &bare].map(|o| selector.matches(o));
            assert_eq!(got, expected, "{text}");
        }
    }
}
