//! Chains of property reads, method calls and indexes (`order.dispenseRequest.quantity`,
//! `list.filter(...)[0]`) as the steps an author wrote, for `cardinal check` and for rule errors
//! that name the expression that failed.

use rhai::{ASTFlags, Expr, FnCallExpr, Position};

/// One step of a chain such as `order.dispenseRequest.expectedSupplyDuration` or `x.filter(...)[0]`,
/// with whether it was reached with `?.`.
pub(crate) enum Link<'e> {
    Prop(&'e str, Position),
    Method(&'e FnCallExpr, Position),
    Index(&'e Expr),
    Other(&'e Expr),
}

/// A chain's root and its steps (Rhai nests chains to the right, and an index's continuation
/// inside the index node unless it is flagged `BREAK`).
pub(crate) fn flatten(e: &Expr) -> Option<(&Expr, Vec<(Link<'_>, bool)>)> {
    let mut links = Vec::new();
    match e {
        Expr::Dot(x, flags, _) => {
            members(&x.rhs, flags.contains(ASTFlags::NEGATED), &mut links);
            Some((&x.lhs, links))
        }
        Expr::Index(x, flags, _) => {
            indexes(&x.rhs, *flags, &mut links);
            Some((&x.lhs, links))
        }
        _ => None,
    }
}

fn members<'e>(e: &'e Expr, safe: bool, out: &mut Vec<(Link<'e>, bool)>) {
    match e {
        Expr::Dot(x, flags, _) => {
            member(&x.lhs, safe, out);
            members(&x.rhs, flags.contains(ASTFlags::NEGATED), out);
        }
        Expr::Index(x, flags, _) => {
            member(&x.lhs, safe, out);
            indexes(&x.rhs, *flags, out);
        }
        other => member(other, safe, out),
    }
}

fn member<'e>(e: &'e Expr, safe: bool, out: &mut Vec<(Link<'e>, bool)>) {
    let link = match e {
        Expr::Property(x, pos) => Link::Prop(x.2.as_str(), *pos),
        Expr::MethodCall(call, pos) => Link::Method(call, *pos),
        other => Link::Other(other),
    };
    out.push((link, safe));
}

fn indexes<'e>(e: &'e Expr, flags: ASTFlags, out: &mut Vec<(Link<'e>, bool)>) {
    if flags.contains(ASTFlags::BREAK) {
        out.push((Link::Index(e), false));
        return;
    }
    match e {
        Expr::Dot(y, f, _) => {
            out.push((Link::Index(&y.lhs), false));
            members(&y.rhs, f.contains(ASTFlags::NEGATED), out);
        }
        Expr::Index(y, f, _) => {
            out.push((Link::Index(&y.lhs), false));
            indexes(&y.rhs, *f, out);
        }
        other => out.push((Link::Index(other), false)),
    }
}

pub(crate) fn variable_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Variable(x, ..) => Some(x.1.as_str()),
        _ => None,
    }
}
