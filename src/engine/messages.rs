//! Rule errors in the rule author's words. Rhai says "Unknown property 'value' - a getter is not
//! registered for type '()'"; an informaticist needs "`k` is absent: the patient has no such
//! value, so `k.value` cannot be read", and what to do about it. The expression is named as the
//! rule wrote it (variable and element names, never values), so no patient data gets in.

use rhai::{AST, ASTNode, Engine, EvalAltResult, Expr, Position, Stmt};

use super::chain::{Link, flatten};

/// A rewritten error: the message, with its hint.
pub(crate) struct Explained {
    pub message: String,
}

fn text(root: &Expr) -> String {
    match root {
        Expr::Variable(x, ..) => x.1.to_string(),
        Expr::FnCall(call, _) => format!("{}(...)", call.name),
        Expr::Property(x, _) => x.2.to_string(),
        _ => "(...)".to_owned(),
    }
}

/// `a.b[...].c(...)`: a chain written back, up to `steps` steps.
fn chain_text(root: &Expr, links: &[(Link<'_>, bool)], steps: usize) -> String {
    let mut out = text(root);
    for (link, safe) in links.iter().take(steps) {
        let dot = if *safe { "?." } else { "." };
        match link {
            Link::Prop(name, _) => out.push_str(&format!("{dot}{name}")),
            Link::Method(call, _) => out.push_str(&format!("{dot}{}(...)", call.name)),
            Link::Index(_) => out.push_str("[...]"),
            Link::Other(_) => out.push_str(".(...)"),
        }
    }
    out
}

/// The value read as absent and the whole read, for a property read or an index at `pos`:
/// (`k`, `k.value`), (`p.name`, `p.name[...]`).
fn absent_read(ast: &AST, pos: Position) -> Option<(String, String)> {
    let mut found = None;
    ast.walk(&mut |path: &[ASTNode]| {
        if found.is_some() {
            return false;
        }
        // The step that failed: a property (or the dot before it), or an index of a property.
        let (indexed, property) = match path.last() {
            Some(ASTNode::Expr(Expr::Property(_, p) | Expr::Dot(_, _, p))) if *p == pos => {
                (false, Some(pos))
            }
            Some(ASTNode::Expr(Expr::Index(x, _, p))) if *p == pos => match &x.lhs {
                Expr::Property(_, at) => (true, Some(*at)),
                _ => (true, None),
            },
            _ => return true,
        };
        // The outermost chain node above this one.
        let outer = path
            .iter()
            .position(|node| matches!(node, ASTNode::Expr(Expr::Dot(..) | Expr::Index(..))));
        let Some(ASTNode::Expr(top)) = outer.and_then(|i| path.get(i)) else {
            return true;
        };
        let Some((root, links)) = flatten(top) else {
            return true;
        };
        let step = match property {
            Some(at) => links
                .iter()
                .position(|(l, _)| matches!(l, Link::Prop(_, p) if *p == at))
                .or_else(|| links.iter().position(|(l, _)| matches!(l, Link::Prop(..)))),
            // The chain's root itself is indexed.
            None => None,
        };
        found = match (step, indexed) {
            (Some(step), false) => Some((
                chain_text(root, &links, step),
                chain_text(root, &links, step + 1),
            )),
            (Some(step), true) => Some((
                chain_text(root, &links, step + 1),
                chain_text(root, &links, step + 2),
            )),
            (None, true) => Some((chain_text(root, &links, 0), chain_text(root, &links, 1))),
            (None, false) => None,
        };
        found.is_none()
    });
    found
}

/// How the rule computed the variable `name` (`patient.latest_observation(...)`), if it bound it
/// with `let`.
fn binding(ast: &AST, name: &str) -> Option<String> {
    let mut found = None;
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Var(x, ..))) = path.last()
            && x.0.name.as_str() == name
            && found.is_none()
        {
            found = Some(match flatten(&x.1) {
                Some((root, links)) => chain_text(root, &links, links.len()),
                None => text(&x.1),
            });
        }
        found.is_none()
    });
    found
}

fn absent_hint(ast: &AST, absent: &str) -> String {
    let is_variable = rhai::is_valid_identifier(absent);
    match binding(ast, absent).filter(|_| is_variable) {
        Some(source) => format!(
            "guard it with require: `let {absent} = require(\"...\", {source});` stops the rule quietly when the patient has none, or test `{absent} != ()` first"
        ),
        None => format!(
            "guard it with require: `require(\"...\", {absent})` stops the rule quietly when it is absent, or test `{absent} != ()` (or read it with `?.`); if it should be there, check the element's spelling (`cardinal check` finds misspelt FHIR elements)"
        ),
    }
}

fn names_of(engine: &Engine) -> Vec<String> {
    engine.collect_fn_metadata(
        None,
        |f| {
            let name = f.metadata.name.as_str();
            rhai::is_valid_identifier(name).then(|| name.to_owned())
        },
        true,
    )
}

/// The innermost error of nested function calls, and the innermost function.
pub(crate) fn innermost(err: &EvalAltResult) -> (&EvalAltResult, Option<String>) {
    match err {
        EvalAltResult::ErrorInFunctionCall(name, _, inner, _) => match innermost(inner) {
            (e, Some(f)) => (e, Some(f)),
            (e, None) => (e, Some(name.clone())),
        },
        other => (other, None),
    }
}

/// `err` rewritten for the rule author, or `None` to keep Rhai's words.
pub(crate) fn explain(engine: &Engine, ast: &AST, err: &EvalAltResult) -> Option<Explained> {
    let (inner, function) = innermost(err);
    let (message, hint) = match inner {
        EvalAltResult::ErrorDotExpr(text, pos) => {
            let rest = text.strip_prefix("Unknown property '")?;
            let (prop, rest) = rest.split_once('\'')?;
            let ty = rest
                .strip_prefix(" - a getter is not registered for type '")?
                .trim_end_matches('\'');
            if ty == "()" {
                let (absent, read) = absent_read(ast, *pos)
                    .unwrap_or_else(|| ("the value".to_owned(), format!("`.{prop}`")));
                (
                    format!(
                        "`{absent}` is absent (`()`): the patient has no such value, so `{read}` cannot be read"
                    ),
                    absent_hint(ast, &absent),
                )
            } else {
                let names = engine.collect_fn_metadata(
                    None,
                    |f| f.metadata.name.strip_prefix("get$").map(str::to_owned),
                    true,
                );
                let hint = crate::lint::closest_name(prop, names.iter().map(String::as_str))
                    .map_or_else(
                        || "see docs/rules.md for what a rule can read".to_owned(),
                        |n| format!("did you mean `{n}`?"),
                    );
                (format!("a {ty} has no property `{prop}`"), hint)
            }
        }
        EvalAltResult::ErrorFunctionNotFound(signature, _) => {
            let (name, args) = signature
                .split_once(" (")
                .map_or((signature.as_str(), ""), |(n, a)| {
                    (n, a.trim_end_matches(')'))
                });
            let names = names_of(engine);
            let script: Vec<String> = ast.iter_fn_def().map(|f| f.name.to_string()).collect();
            let exists = names.iter().chain(script.iter()).any(|n| n == name);
            let absent = args.split(", ").any(|a| a == "()");
            if !rhai::is_valid_identifier(name) {
                // An operator: `k.value > 5.5` with `k.value` absent is the usual case.
                (
                    format!("`{name}` cannot be applied to ({args})"),
                    if absent {
                        "one side is absent (`()`): the patient has no such value; guard it with require(\"...\", value) or test `!= ()` first".to_owned()
                    } else {
                        "convert one side first (`to_int()`, `to_float()`, `to_string()`)"
                            .to_owned()
                    },
                )
            } else if !exists {
                let hint = crate::lint::closest_name(
                    name,
                    names.iter().chain(script.iter()).map(String::as_str),
                )
                .map_or_else(
                    || "see docs/rules.md for the helpers a rule can call".to_owned(),
                    |n| format!("did you mean `{n}`?"),
                );
                (format!("function `{name}` is not defined"), hint)
            } else if absent {
                (
                    format!("`{name}` cannot take ({args})"),
                    "an argument is absent (`()`): the patient has no such value; guard it with require(\"...\", value) first".to_owned(),
                )
            } else {
                (
                    format!("`{name}` cannot take ({args})"),
                    "check its arguments in docs/rules.md".to_owned(),
                )
            }
        }
        EvalAltResult::ErrorMismatchDataType(expected, actual, _)
        | EvalAltResult::ErrorMismatchOutputType(expected, actual, _) => (
            format!("expected {expected}, got {actual}"),
            if actual == "()" {
                "the value is absent (`()`): the patient has no such value; guard it with require(\"...\", value) first".to_owned()
            } else {
                "convert it first (`to_int()`, `to_float()`, `to_string()`)".to_owned()
            },
        ),
        EvalAltResult::ErrorArrayBounds(len, index, _) => (
            format!("index {index} is outside a list of {len}"),
            if *len == 0 {
                "the list is empty: `require(\"...\", list)` stops the rule quietly on an empty list".to_owned()
            } else {
                "check `list.len()` first".to_owned()
            },
        ),
        EvalAltResult::ErrorIndexingType(ty, pos) if ty.contains("()") => {
            match absent_read(ast, *pos) {
                Some((absent, read)) => (
                    format!(
                        "`{absent}` is absent (`()`): the patient has no such value, so `{read}` cannot be read"
                    ),
                    absent_hint(ast, &absent),
                ),
                None => (
                    "an absent value (`()`) cannot be indexed".to_owned(),
                    "the patient has no such value; guard it with require(\"...\", value) first"
                        .to_owned(),
                ),
            }
        }
        _ => return None,
    };
    let within = function
        .as_deref()
        .filter(|f| !f.contains('$'))
        .map(|f| format!("in function `{f}`: "))
        .unwrap_or_default();
    Some(Explained {
        message: format!("{within}{message}; hint: {hint}"),
    })
}
