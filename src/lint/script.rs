//! The checks that read a rule's syntax tree, with what little type knowledge the rule API gives:
//! `patient.latest_observation(...)` is an Observation (or `()`), `patient.resources("Condition")`
//! a list of Conditions, `order.dispenseRequest` a `MedicationRequest.dispenseRequest`, and so on.
//!
//! - FHIR elements read on a value whose FHIR type is known, checked against FHIR R4
//!   ([`super::fhir`]); properties of `patient` checked against the engine's.
//! - A property read on a value that is `()` when the patient lacks the data
//!   (`patient.latest_observation(...)`) with no `require`, `!= ()` or `?.` guard anywhere.
//! - Card literals: `card(#{ ... })` checked by the engine's own card validator ([`super::cards`]).
//!
//! Conservative by design: a value whose type is not known is not checked, so a finding is a real
//! mistake, not a guess.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use rhai::{AST, ASTFlags, ASTNode, Expr, FnCallExpr, FnPtr, Position, Stmt};

use crate::engine::chain::{Link, flatten, variable_name};

use super::fhir::Elements;
use super::suggest::did_you_mean;
use super::{Finding, Severity, cards};

/// What the checks know of the engine (read from it once per `cardinal check`).
pub(crate) struct Api {
    /// Every function name a rule can call (Cardinal's and Rhai's).
    pub functions: BTreeSet<String>,
    /// `patient.<property>`.
    pub patient: BTreeSet<String>,
    /// The properties the engine adds to a resource (`obs.value`, `r.days_ago`).
    pub resource: BTreeSet<String>,
}

/// What a rule value is known to be.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Unknown,
    Patient,
    Context,
    /// A resource a helper handed out: its FHIR elements plus the engine's resource properties.
    Handle(Vec<&'static str>),
    /// An element read from a resource (plain JSON): FHIR elements only.
    Element(Vec<&'static str>),
    List(Box<Ty>),
}

/// A variable, and the helper that may have left it `()` when the patient lacks the data.
#[derive(Debug, Clone)]
struct Var {
    ty: Ty,
    absent: Option<&'static str>,
}

/// Helpers of `patient` whose result is `()` when the record has nothing to give.
const MAYBE_ABSENT: &[&str] = &["latest_observation"];

/// List methods that take a closure called with each element.
const CLOSURE_METHODS: &[&str] = &[
    "filter",
    "map",
    "some",
    "all",
    "find",
    "find_map",
    "for_each",
    "reduce",
    "reduce_rev",
    "retain",
    "drain",
    "sort",
    "index_of",
    "dedup",
];

/// Methods that make sense on `()` (so reading them is no mistake).
const UNIT_SAFE: &[&str] = &["type_of", "to_string", "to_debug", "is_unknown"];

/// Variables that appear somewhere as a guard: compared (`x != ()`), passed to `require`, used as a
/// condition or with `??`, read with `?.`, or reassigned. A variable guarded anywhere is trusted.
fn guarded(ast: &AST) -> HashSet<String> {
    let mut found = HashSet::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let [.., parent, ASTNode::Expr(Expr::Variable(x, ..))] = path {
            let guard = match parent {
                ASTNode::Expr(Expr::FnCall(call, _)) => matches!(
                    call.name.as_str(),
                    "==" | "!=" | "require" | "type_of" | "is_unknown"
                ),
                ASTNode::Expr(Expr::And(..) | Expr::Or(..) | Expr::Coalesce(..)) => true,
                ASTNode::Expr(Expr::Dot(_, flags, _)) => flags.contains(ASTFlags::NEGATED),
                ASTNode::Stmt(
                    Stmt::If(..) | Stmt::While(..) | Stmt::Do(..) | Stmt::Assignment(..),
                ) => true,
                _ => false,
            };
            if guard {
                found.insert(x.1.to_string());
            }
        }
        true
    });
    found
}

/// A script function (a library function or a closure) as `check` needs it.
struct Function {
    name: String,
    params: Vec<String>,
    start: Position,
    end: Position,
}

fn at(pos: Position) -> Option<(usize, usize)> {
    Some((pos.line()?, pos.position().unwrap_or(0)))
}

/// The function, from `from` on, whose body most closely contains `pos` (an expression closure's
/// body has no end: only its own statement is at its start).
fn innermost(functions: &[Function], from: usize, pos: Position) -> Option<usize> {
    let p = at(pos)?;
    functions
        .iter()
        .enumerate()
        .skip(from)
        .filter_map(|(i, f)| {
            let start = at(f.start)?;
            match at(f.end) {
                Some(end) if start <= p && p <= end => Some((end, start, i)),
                None if start == p => Some((start, start, i)),
                _ => None,
            }
        })
        // Smallest range: earliest end, then latest start.
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, _, i)| i)
}

struct Walker<'a> {
    api: &'a Api,
    elements: &'static Elements,
    path: &'a Path,
    vars: HashMap<String, Var>,
    guarded: HashSet<String>,
    warned: HashSet<String>,
    /// Parameter types of closures, learnt where they are passed to a list method.
    hints: HashMap<String, Vec<Var>>,
    findings: Vec<Finding>,
}

/// The syntax-tree findings for one parsed rule or library file.
pub(crate) fn check(api: &Api, path: &Path, ast: &AST) -> Vec<Finding> {
    let mut walker = Walker {
        api,
        elements: Elements::r4(),
        path,
        vars: HashMap::new(),
        guarded: guarded(ast),
        warned: HashSet::new(),
        hints: HashMap::new(),
        findings: Vec::new(),
    };
    walker.block(ast.statements());
    // Function bodies (library functions, closures) are only reachable through `AST::walk`, which
    // visits the top-level statements and then each function's, in `iter_fn_def` order; a
    // statement belongs to the innermost function whose body contains it.
    let functions: Vec<Function> = ast
        .iter_fn_def()
        .map(|f| Function {
            name: f.name.to_string(),
            params: f.params.iter().map(ToString::to_string).collect(),
            start: f.body.start_position(),
            end: f.body.end_position(),
        })
        .collect();
    let top = ast.statements().len();
    let mut seen = 0;
    let mut cursor = 0;
    let mut current = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let [ASTNode::Stmt(stmt)] = path else {
            return true;
        };
        seen += 1;
        if seen <= top {
            return true;
        }
        let index = innermost(&functions, cursor, stmt.position()).unwrap_or(cursor);
        cursor = index;
        if current != Some(index) {
            current = Some(index);
            if let Some(f) = functions.get(index) {
                walker.enter(f);
            }
        }
        walker.stmt(stmt);
        true
    });
    walker.findings
}

impl Walker<'_> {
    fn finding(
        &mut self,
        pos: Position,
        severity: Severity,
        check: &'static str,
        message: String,
        hint: Option<String>,
    ) {
        self.findings.push(Finding {
            path: self.path.to_path_buf(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            severity,
            check,
            message,
            hint,
        });
    }

    fn block(&mut self, statements: &[Stmt]) {
        for s in statements {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Var(x, ..) => {
                let (ident, init, _) = &**x;
                let var = self.bind(init);
                self.vars.insert(ident.name.to_string(), var);
            }
            Stmt::If(fc, _) | Stmt::While(fc, _) | Stmt::Do(fc, ..) | Stmt::TryCatch(fc, _) => {
                self.expr(&fc.expr);
                self.block(fc.body.statements());
                self.block(fc.branch.statements());
            }
            Stmt::For(x, _) => {
                let (var, counter, fc) = &**x;
                let element = match self.expr(&fc.expr) {
                    Ty::List(t) => *t,
                    _ => Ty::Unknown,
                };
                self.vars.insert(
                    var.name.to_string(),
                    Var {
                        ty: element,
                        absent: None,
                    },
                );
                if let Some(counter) = counter {
                    self.vars.remove(counter.name.as_str());
                }
                self.block(fc.body.statements());
            }
            Stmt::Switch(x, _) => {
                let (on, cases) = &**x;
                self.expr(on);
                for case in &cases.expressions {
                    self.expr(&case.lhs);
                    self.expr(&case.rhs);
                }
            }
            Stmt::Assignment(x) => {
                let (_, binary) = &**x;
                self.expr(&binary.rhs);
                match variable_name(&binary.lhs) {
                    // Whatever it held, it is something else now.
                    Some(name) => {
                        self.vars.insert(
                            name.to_owned(),
                            Var {
                                ty: Ty::Unknown,
                                absent: None,
                            },
                        );
                    }
                    None => {
                        self.expr(&binary.lhs);
                    }
                }
            }
            Stmt::FnCall(call, pos) => {
                self.call(call, *pos);
            }
            Stmt::Block(block) => self.block(block.statements()),
            Stmt::Expr(e) => {
                self.expr(e);
            }
            Stmt::BreakLoop(Some(e), ..) | Stmt::Return(Some(e), ..) => {
                self.expr(e);
            }
            _ => {}
        }
    }

    fn bind(&mut self, init: &Expr) -> Var {
        let ty = self.expr(init);
        let absent = flatten(init).and_then(|(root, links)| {
            let (Link::Method(call, _), _) = links.last()? else {
                return None;
            };
            (variable_name(root) == Some("patient") && links.len() == 1)
                .then(|| MAYBE_ABSENT.iter().find(|m| **m == call.name.as_str()))
                .flatten()
                .copied()
        });
        Var { ty, absent }
    }

    fn expr(&mut self, e: &Expr) -> Ty {
        match e {
            Expr::Variable(x, ..) => {
                let name = x.1.as_str();
                match self.vars.get(name) {
                    Some(var) => var.ty.clone(),
                    None if name == "patient" => Ty::Patient,
                    None if name == "context" => Ty::Context,
                    None => Ty::Unknown,
                }
            }
            Expr::Dot(..) | Expr::Index(..) => self.chain(e),
            Expr::FnCall(call, pos) => self.call(call, *pos),
            Expr::Stmt(block) => {
                self.block(block.statements());
                Ty::Unknown
            }
            Expr::InterpolatedString(items, _) | Expr::Array(items, _) => {
                for item in items {
                    self.expr(item);
                }
                Ty::Unknown
            }
            Expr::Map(x, _) => {
                for (_, value) in &x.0 {
                    self.expr(value);
                }
                Ty::Unknown
            }
            Expr::And(items, _) | Expr::Or(items, _) | Expr::Coalesce(items, _) => {
                for item in items.iter() {
                    self.expr(item);
                }
                Ty::Unknown
            }
            _ => Ty::Unknown,
        }
    }

    fn call(&mut self, call: &FnCallExpr, pos: Position) -> Ty {
        let types: Vec<Ty> = call.args.iter().map(|a| self.expr(a)).collect();
        match call.name.as_str() {
            // `require` gives its condition back when it holds.
            "require" => types.get(1).cloned().unwrap_or(Ty::Unknown),
            "card" => {
                if let Some(spec) = call.args.first() {
                    self.findings.extend(cards::check(self.path, spec, pos));
                }
                Ty::Unknown
            }
            _ => Ty::Unknown,
        }
    }

    fn chain(&mut self, e: &Expr) -> Ty {
        let Some((root, links)) = flatten(e) else {
            return Ty::Unknown;
        };
        let mut ty = self.expr(root);
        self.check_absent(root, &links);
        for (link, _) in &links {
            ty = match link {
                Link::Prop(name, pos) => self.property(&ty, name, *pos),
                Link::Method(call, _) => self.method(&ty, call),
                Link::Index(index) => {
                    self.expr(index);
                    match ty {
                        Ty::List(element) => *element,
                        // A repeating element read whole is a list of the same type.
                        Ty::Element(types) => Ty::Element(types),
                        _ => Ty::Unknown,
                    }
                }
                Link::Other(other) => {
                    self.expr(other);
                    Ty::Unknown
                }
            };
        }
        ty
    }

    /// `x.value` where `x` may be `()` and nothing guards it.
    fn check_absent(&mut self, root: &Expr, links: &[(Link<'_>, bool)]) {
        let Some(name) = variable_name(root) else {
            return;
        };
        let Some(helper) = self.vars.get(name).and_then(|v| v.absent) else {
            return;
        };
        let (read, pos) = match links.first() {
            Some((Link::Prop(prop, pos), false)) => (format!("{name}.{prop}"), *pos),
            Some((Link::Method(call, pos), false)) if !UNIT_SAFE.contains(&call.name.as_str()) => {
                (format!("{name}.{}(...)", call.name), *pos)
            }
            _ => return,
        };
        if self.guarded.contains(name) || !self.warned.insert(name.to_owned()) {
            return;
        }
        self.finding(
            pos,
            Severity::Warning,
            "absent-value",
            format!(
                "`{read}` is read without checking that `{name}` exists: `patient.{helper}(...)` gives `()` when the patient has no such result, and the rule then stops with an error"
            ),
            Some(format!(
                "guard it with require: `let {name} = require(\"a ... result on record\", patient.{helper}(...));`, or test `{name} != ()` first"
            )),
        );
    }

    fn property(&mut self, ty: &Ty, name: &str, pos: Position) -> Ty {
        match ty {
            Ty::Patient => {
                if name == "resource" {
                    return Ty::Handle(vec!["Patient"]);
                }
                if !self.api.patient.contains(name) {
                    let hint = did_you_mean(name, self.api.patient.iter().map(String::as_str))
                        .unwrap_or_else(|| {
                            format!(
                                "the patient record has: {}",
                                self.api
                                    .patient
                                    .iter()
                                    .map(String::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        });
                    self.finding(
                        pos,
                        Severity::Error,
                        "unknown-property",
                        format!("`patient` has no property `{name}`"),
                        Some(hint),
                    );
                }
                Ty::Unknown
            }
            Ty::Context if name == "draft_orders" => Ty::List(Box::new(Ty::Unknown)),
            Ty::Handle(types) | Ty::Element(types) => {
                let handle = matches!(ty, Ty::Handle(_));
                if handle && self.api.resource.contains(name) {
                    return Ty::Unknown;
                }
                // `_birthDate` (a primitive's extensions) and `resourceType` are in the JSON, not
                // in the element definitions.
                if name.starts_with('_') || name == "resourceType" {
                    return Ty::Unknown;
                }
                if types.is_empty() || !types.iter().all(|t| self.elements.is_complex(t)) {
                    return Ty::Unknown;
                }
                let mut next: Vec<&'static str> = types
                    .iter()
                    .filter_map(|t| self.elements.element(t, name))
                    .flatten()
                    .copied()
                    .collect();
                next.sort_unstable();
                next.dedup();
                if next.is_empty() {
                    self.unknown_element(types, name, pos, handle);
                    return Ty::Unknown;
                }
                // A contained resource can be of any type.
                if next
                    .iter()
                    .any(|t| matches!(*t, "Resource" | "DomainResource"))
                {
                    return Ty::Unknown;
                }
                Ty::Element(next)
            }
            _ => Ty::Unknown,
        }
    }

    fn unknown_element(&mut self, types: &[&'static str], name: &str, pos: Position, handle: bool) {
        let mut known: BTreeSet<&str> = types.iter().flat_map(|t| self.elements.names(t)).collect();
        if handle {
            known.extend(self.api.resource.iter().map(String::as_str));
        }
        let shown = types.join(" or ");
        let hint = did_you_mean(name, known.iter().copied())
            .unwrap_or_else(|| format!("see the elements of {shown} in the FHIR R4 specification"));
        self.finding(
            pos,
            Severity::Error,
            "unknown-element",
            format!(
                "`{name}` is not an element of {shown} (FHIR R4): it would always read as `()`"
            ),
            Some(hint),
        );
    }

    fn method(&mut self, ty: &Ty, call: &FnCallExpr) -> Ty {
        let name = call.name.as_str();
        let element = match ty {
            Ty::List(element) => Some((**element).clone()),
            _ => None,
        };
        // Closures first, with the element type: their bodies are checked with it.
        for (i, arg) in call.args.iter().enumerate() {
            match (&element, i) {
                (Some(element), 0) if CLOSURE_METHODS.contains(&name) => {
                    self.closure(arg, element);
                }
                _ => {
                    self.expr(arg);
                }
            }
        }
        let handles = |types: &[&'static str]| Ty::List(Box::new(Ty::Handle(types.to_vec())));
        match ty {
            Ty::Patient => match name {
                "latest_observation" => Ty::Handle(vec!["Observation"]),
                "observations" => handles(&["Observation"]),
                "find" | "resources" | "all_resources" | "resources_in" => {
                    match call.args.first() {
                        Some(Expr::StringConstant(t, _)) => match self.elements.resource(t) {
                            Some(t) => handles(&[t]),
                            None => Ty::List(Box::new(Ty::Unknown)),
                        },
                        _ => Ty::List(Box::new(Ty::Unknown)),
                    }
                }
                "conditions" | "active_conditions" => handles(&["Condition"]),
                "medications"
                | "active_medications"
                | "medications_in"
                | "active_medications_in" => handles(&["MedicationRequest", "MedicationStatement"]),
                "medication" => Ty::Element(vec!["CodeableConcept"]),
                _ => Ty::Unknown,
            },
            Ty::Context => match name {
                "draft_medications" | "draft_medications_in" => handles(&["MedicationRequest"]),
                _ => Ty::Unknown,
            },
            Ty::List(element) => match name {
                "filter" | "retain" | "drain" | "sort" | "reverse" | "extract" => ty.clone(),
                "find" | "get" | "pop" | "shift" => (**element).clone(),
                _ => Ty::Unknown,
            },
            _ => Ty::Unknown,
        }
    }

    /// Starts a function body: its parameters typed when a call site told (closures), else
    /// unknown, except `patient` and `context`, which are the rule's by convention.
    fn enter(&mut self, f: &Function) {
        self.vars.clear();
        let hints = self.hints.get(&f.name).cloned().unwrap_or_default();
        for (i, param) in f.params.iter().enumerate() {
            match hints.get(i) {
                Some(var) => {
                    self.vars.insert(param.clone(), var.clone());
                }
                None if matches!(param.as_str(), "patient" | "context") => {}
                None => {
                    self.vars.insert(
                        param.clone(),
                        Var {
                            ty: Ty::Unknown,
                            absent: None,
                        },
                    );
                }
            }
        }
    }

    /// A closure passed to a list method: its parameter is the list's element (its captured
    /// variables, curried in front, keep their types). Its body is checked with the function
    /// bodies, with these types.
    fn closure(&mut self, arg: &Expr, element: &Ty) {
        self.expr(arg);
        let mut target: Option<String> = None;
        let mut curried: Vec<Option<String>> = Vec::new();
        arg.walk(&mut Vec::new(), &mut |path: &[ASTNode]| {
            match path.last() {
                Some(ASTNode::Expr(Expr::DynamicConstant(value, _))) => {
                    if let Some(f) = value.read_lock::<FnPtr>()
                        && target.is_none()
                    {
                        target = Some(f.fn_name().to_owned());
                    }
                }
                Some(ASTNode::Expr(Expr::FnCall(call, _))) if call.name.as_str() == "curry" => {
                    curried = call
                        .args
                        .iter()
                        .skip(1)
                        .map(|a| variable_name(a).map(str::to_owned))
                        .collect();
                }
                _ => {}
            }
            true
        });
        let Some(target) = target else {
            return;
        };
        let unknown = Var {
            ty: Ty::Unknown,
            absent: None,
        };
        let mut params: Vec<Var> = curried
            .iter()
            .map(|name| {
                name.as_deref()
                    .and_then(|n| self.vars.get(n))
                    .cloned()
                    .unwrap_or_else(|| unknown.clone())
            })
            .collect();
        params.push(Var {
            ty: element.clone(),
            absent: None,
        });
        self.hints.insert(target, params);
    }
}
