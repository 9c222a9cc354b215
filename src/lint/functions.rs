//! Calls to functions nobody defines: not the engine (Cardinal's helpers, Rhai's standard library,
//! read from the engine's own function table), not the rule file, not its pack's library files.
//! Rhai would only say so at run time, and only for a patient whose case reaches the call.

use std::collections::BTreeSet;
use std::path::Path;

use rhai::{AST, ASTNode, Expr, Position, Stmt};

use super::script::Api;
use super::suggest::did_you_mean;
use super::{Finding, Severity};

/// Functions the Rhai language itself provides (keywords, not registered functions).
const LANGUAGE: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_def_var",
    "is_def_fn",
    "is_shared",
];

/// The script-defined functions of a file (closures excepted).
pub(crate) fn defined(ast: &AST) -> BTreeSet<String> {
    ast.iter_fn_def()
        .map(|f| f.name.to_string())
        .filter(|n| !n.contains('$'))
        .collect()
}

/// Variable names of a file: a variable holding a function pointer can be called like a function.
fn variables(ast: &AST) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = ast
        .iter_fn_def()
        .flat_map(|f| f.params.iter().map(ToString::to_string).collect::<Vec<_>>())
        .collect();
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                names.insert(x.0.name.to_string());
            }
            Some(ASTNode::Stmt(Stmt::For(x, _))) => {
                names.insert(x.0.name.to_string());
            }
            _ => {}
        }
        true
    });
    names
}

/// Calls in `ast` (one file) to functions defined nowhere; `library` holds the functions of the
/// pack's library files the rule is compiled with.
pub(crate) fn check(api: &Api, path: &Path, ast: &AST, library: &BTreeSet<String>) -> Vec<Finding> {
    let own = defined(ast);
    let variables = variables(ast);
    let known = |name: &str| {
        api.functions.contains(name)
            || own.contains(name)
            || library.contains(name)
            || LANGUAGE.contains(&name)
            || variables.contains(name)
    };
    let mut calls: Vec<(String, Position)> = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos) | Expr::MethodCall(call, pos))) => {
                Some((call, *pos))
            }
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => Some((call, *pos)),
            _ => None,
        };
        if let Some((call, pos)) = call
            && call.op_token.is_none()
            && rhai::is_valid_identifier(call.name.as_str())
        {
            calls.push((call.name.to_string(), pos));
        }
        true
    });
    let candidates: BTreeSet<&str> = api
        .functions
        .iter()
        .map(String::as_str)
        .chain(own.iter().map(String::as_str))
        .chain(library.iter().map(String::as_str))
        .filter(|n| rhai::is_valid_identifier(n))
        .collect();
    calls
        .into_iter()
        .filter(|(name, _)| !known(name))
        .map(|(name, pos)| Finding {
            path: path.to_path_buf(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            severity: Severity::Error,
            check: "unknown-function",
            message: format!(
                "function `{name}` is not defined: not a Cardinal helper, not Rhai's, not in this file or the service's `include` files"
            ),
            hint: Some(did_you_mean(&name, candidates.iter().copied()).unwrap_or_else(|| {
                "see docs/rules.md for the helpers a rule can call".to_owned()
            })),
        })
        .collect()
}
