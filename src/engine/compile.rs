//! Compiling rule files once, at start-up, with precise locations for every error.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{AST, Engine, Scope};

use super::RuleMode;

/// Variables every rule can read; declared at compile time so that `set_strict_variables` catches
/// misspelt names before the service starts.
pub(crate) const RULE_VARIABLES: &[&str] = &["patient", "context", "hook", "service"];

/// A rule file to compile, with the shared library code of its pack (function definitions and
/// constants, prepended at run time).
#[derive(Clone)]
pub struct RuleSource {
    pub id: String,
    pub version: String,
    pub mode: RuleMode,
    pub path: PathBuf,
    pub source: String,
    pub library: Option<Arc<AST>>,
    /// The library files concatenated into `library`, each with the line it starts at there, so an
    /// error in a library function names its own file and line.
    pub library_files: Vec<(PathBuf, usize)>,
}

/// A rule ready to run. Immutable; shared by every request.
#[derive(Clone)]
pub struct CompiledRule {
    pub id: String,
    pub version: String,
    pub mode: RuleMode,
    pub path: PathBuf,
    /// The file as reports name it: relative to the rules directory once loaded (set by the
    /// registry), the path as given until then.
    pub file: String,
    /// Library files as reports name them, with the line each starts at in the library source.
    pub library_files: Vec<(String, usize)>,
    /// The functions (closures included) the library defines: an error inside one is in a library
    /// file, not the rule's.
    pub(crate) library_functions: Arc<BTreeSet<String>>,
    pub(crate) ast: Arc<AST>,
}

impl fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRule")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A rule or manifest that cannot be loaded: `path:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for CompileError {}

pub(crate) fn declared_scope() -> Scope<'static> {
    let mut scope = Scope::new();
    // Plain variables, not constants: constants would be folded into the AST by the optimiser.
    for name in RULE_VARIABLES {
        scope.push(*name, ());
    }
    scope
}

fn parse_error(path: &Path, err: &rhai::ParseError) -> CompileError {
    CompileError {
        path: path.to_path_buf(),
        line: err.position().line(),
        column: err.position().position(),
        message: err.err_type().to_string(),
    }
}

/// Compiles a library file (shared functions and constants of a rule pack).
pub(crate) fn compile_library(
    engine: &Engine,
    path: &Path,
    source: &str,
) -> Result<AST, CompileError> {
    engine
        .compile_with_scope(&declared_scope(), source)
        .map_err(|e| parse_error(path, &e))
}

pub(crate) fn compile(
    engine: &Engine,
    source: &RuleSource,
) -> Result<CompiledRule, Vec<CompileError>> {
    let scope = declared_scope();
    let ast = match &source.library {
        // Compiled together so the rule may call the library's functions and read its constants.
        Some(library) => {
            let rule_ast = engine
                .compile_with_scope(&scope, &source.source)
                .map_err(|e| vec![parse_error(&source.path, &e)])?;
            library.merge(&rule_ast)
        }
        None => engine
            .compile_with_scope(&scope, &source.source)
            .map_err(|e| vec![parse_error(&source.path, &e)])?,
    };
    let library_functions = source
        .library
        .as_ref()
        .map(|l| l.iter_fn_def().map(|f| f.name.to_string()).collect())
        .unwrap_or_default();
    Ok(CompiledRule {
        id: source.id.clone(),
        version: source.version.clone(),
        mode: source.mode,
        path: source.path.clone(),
        file: source.path.to_string_lossy().replace('\\', "/"),
        library_files: source
            .library_files
            .iter()
            .map(|(p, line)| (p.to_string_lossy().replace('\\', "/"), *line))
            .collect(),
        library_functions: Arc::new(library_functions),
        ast: Arc::new(ast),
    })
}
