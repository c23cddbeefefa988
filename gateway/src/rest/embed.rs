//! Resource embedding: which foreign key joins a parent to an embedded resource.
//! Pure: schema cache + names → relationship. PostgREST's rules: many-to-one
//! (object), one-to-many (array), many-to-many through a junction table (array);
//! `!hint` picks among several by constraint name, column, or junction table.

use serde_json::json;

use super::error::RestError;
use super::request::Embed;
use crate::db::schema_cache::{ForeignKey, Function, SchemaCache, Table};
use crate::db::sql::{ident, qualified};
use crate::error::code::pgrst;

/// How parent and child are related.
#[derive(Debug, Clone)]
pub enum Rel<'a> {
    /// The parent holds the key: `parent(fk.columns) → child(fk.ref_columns)`.
    ManyToOne(&'a ForeignKey),
    /// The child holds the key: `child(fk.columns) → parent(fk.ref_columns)`.
    OneToMany(&'a ForeignKey),
    /// Through a junction: `junction → parent` and `junction → child`.
    ManyToMany {
        /// The junction table.
        junction: &'a Table,
        /// Junction → parent.
        to_parent: &'a ForeignKey,
        /// Junction → child.
        to_child: &'a ForeignKey,
    },
    /// A computed relationship: a function of the parent's row type returning rows
    /// (or one row) of the child's type.
    Computed(&'a Function),
}

impl Rel<'_> {
    /// Many-to-one and one-to-one (the child's key columns are unique) embeds are
    /// objects; the others arrays.
    pub fn is_to_one(&self) -> bool {
        match self {
            Rel::ManyToOne(_) => true,
            Rel::OneToMany(fk) => fk.unique,
            Rel::ManyToMany { .. } => false,
            Rel::Computed(f) => !f.returns_set || f.rows_one,
        }
    }

    /// The (parent column, child column) pairs of a direct key, from the parent's side.
    fn columns(&self) -> Option<Vec<(&str, &str)>> {
        match self {
            Rel::ManyToOne(fk) => Some(fk.columns.iter().zip(&fk.ref_columns).map(|(a, b)| (a.as_str(), b.as_str())).collect()),
            Rel::OneToMany(fk) => Some(fk.ref_columns.iter().zip(&fk.columns).map(|(a, b)| (a.as_str(), b.as_str())).collect()),
            Rel::ManyToMany { .. } | Rel::Computed(_) => None,
        }
    }

    /// A direct key of one column whose parent-side column is `name`.
    fn single_column_is(&self, name: &str) -> bool {
        matches!(self.columns().as_deref(), Some([(col, _)]) if *col == name)
    }

    /// A direct key of one column whose child-side column is `name`.
    fn single_ref_column_is(&self, name: &str) -> bool {
        matches!(self.columns().as_deref(), Some([(_, col)]) if *col == name)
    }

    fn constraint_is(&self, name: &str) -> bool {
        matches!(self, Rel::ManyToOne(fk) | Rel::OneToMany(fk) if fk.name == name)
    }

    fn cardinality(&self) -> &'static str {
        match self {
            Rel::ManyToOne(fk) if fk.unique => "one-to-one",
            Rel::ManyToOne(_) => "many-to-one",
            Rel::OneToMany(fk) if fk.unique => "one-to-one",
            Rel::OneToMany(_) => "one-to-many",
            Rel::ManyToMany { .. } => "many-to-many",
            Rel::Computed(f) if f.returns_set => "one-to-many",
            Rel::Computed(_) => "many-to-one",
        }
    }

    /// PostgREST's description of a candidate in a PGRST201 body.
    fn describe(&self, parent: &Table, child: &Table) -> serde_json::Value {
        let list = |cols: &[String]| format!("({})", cols.join(", "));
        let relationship = match self {
            Rel::ManyToOne(fk) => format!("{} using {}{} and {}{}", fk.name, parent.name, list(&fk.columns), child.name, list(&fk.ref_columns)),
            Rel::OneToMany(fk) => format!("{} using {}{} and {}{}", fk.name, parent.name, list(&fk.ref_columns), child.name, list(&fk.columns)),
            Rel::ManyToMany { junction, to_parent, to_child } => {
                format!("{} using {}{} and {}{}", junction.name, to_parent.name, list(&to_parent.columns), to_child.name, list(&to_child.columns))
            }
            Rel::Computed(f) => format!("{}({})", f.name, parent.name),
        };
        json!({"cardinality": self.cardinality(), "relationship": relationship, "embedding": format!("{} with {}", parent.name, child.name)})
    }

    /// How PostgREST's hint names this candidate in a PGRST201 hint.
    fn hint_name(&self) -> &str {
        match self {
            Rel::ManyToOne(fk) | Rel::OneToMany(fk) => &fk.name,
            Rel::ManyToMany { junction, .. } => &junction.name,
            Rel::Computed(f) => &f.name,
        }
    }
}

fn key(t: &Table) -> (String, String) {
    (t.schema.clone(), t.name.clone())
}

/// Every relationship of `parent` (PostgREST's relationships map): its keys in both
/// directions, and many-to-many through junctions whose two keys lie within the
/// junction's primary key.
fn relationships<'a>(cache: &'a SchemaCache, parent: &Table) -> Vec<(&'a Table, Rel<'a>)> {
    let p = key(parent);
    let mut out = Vec::new();
    // Related resources live in the parent's schema (the request's).
    let same_schema = |t: &(String, String)| t.0 == parent.schema;
    for fk in &cache.foreign_keys {
        if fk.table == p && same_schema(&fk.ref_table) {
            if let Some(child) = cache.tables.get(&fk.ref_table) {
                out.push((child, Rel::ManyToOne(fk)));
            }
        }
        if fk.ref_table == p && same_schema(&fk.table) {
            if let Some(child) = cache.tables.get(&fk.table) {
                out.push((child, Rel::OneToMany(fk)));
            }
        }
    }
    // Junctions in name order: candidates (and a PGRST201's list) come out the same
    // way every time.
    let mut junctions: Vec<&Table> = cache.tables.values().filter(|t| t.schema == parent.schema && key(t) != p && !t.primary_key.is_empty()).collect();
    junctions.sort_by(|a, b| a.name.cmp(&b.name));
    for junction in junctions {
        let j = key(junction);
        let in_pk = |cols: &[String]| cols.iter().all(|c| junction.primary_key.contains(c));
        for to_parent in cache.foreign_keys.iter().filter(|f| f.table == j && f.ref_table == p && in_pk(&f.columns)) {
            for to_child in cache.foreign_keys.iter().filter(|f| f.table == j && f.name != to_parent.name && f.ref_table != j && same_schema(&f.ref_table) && in_pk(&f.columns)) {
                if let Some(child) = cache.tables.get(&to_child.ref_table) {
                    out.push((child, Rel::ManyToMany { junction, to_parent, to_child }));
                }
            }
        }
    }
    // Computed relationships: `f(parent) RETURNS [SETOF] child`.
    let row_type = [parent.name.clone(), format!("{}.{}", parent.schema, parent.name), format!("{}.{}", ident(&parent.schema), ident(&parent.name))];
    let mut computed: Vec<&Function> = cache
        .functions
        .iter()
        .filter(|((schema, _), _)| *schema == parent.schema)
        .flat_map(|(_, fs)| fs)
        .filter(|f| f.args.len() == 1 && row_type.contains(&f.args[0].1) && f.returns_relation.is_some())
        .collect();
    computed.sort_by(|a, b| a.name.cmp(&b.name));
    for f in computed {
        if let Some(child) = f.returns_relation.as_ref().and_then(|k| cache.tables.get(k)) {
            out.push((child, Rel::Computed(f)));
        }
    }
    out
}

/// Finds the embedded table and the one relationship to it, as PostgREST's
/// `findRel`: the embed names a table or view, or (for tables) a foreign key's
/// constraint or its single column; `!hint` names a constraint, a column on either
/// side, or a junction. A self-referencing key reads as one-to-many by the table's
/// name and many-to-one by its column. No match → 400 PGRST200; several → 300
/// PGRST201 with every candidate.
pub fn resolve<'a>(cache: &'a SchemaCache, parent: &Table, e: &Embed) -> Result<(&'a Table, Rel<'a>), RestError> {
    let target = e.name.as_str();
    let mut candidates: Vec<(&Table, Rel)> = relationships(cache, parent)
        .into_iter()
        .filter(|(child, rel)| {
            // A computed relationship is named by its function.
            if let Rel::Computed(f) = rel {
                return f.name == target;
            }
            let is_self = key(child) == key(parent) && !matches!(rel, Rel::ManyToMany { .. });
            let to_many = matches!(rel, Rel::OneToMany(_));
            let to_one = matches!(rel, Rel::ManyToOne(_));
            match (&e.hint, is_self) {
                (None, true) => (child.name == target && to_many) || (rel.single_column_is(target) && to_one),
                (Some(h), true) => child.name == target && to_many && rel.single_ref_column_is(h),
                (None, false) => child.name == target || (!child.is_view && (rel.constraint_is(target) || rel.single_column_is(target))),
                (Some(h), false) => {
                    child.name == target
                        && (rel.constraint_is(h)
                            || rel.single_column_is(h)
                            || rel.single_ref_column_is(h)
                            || matches!(rel, Rel::ManyToMany { junction, .. } if junction.name == *h))
                }
            }
        })
        .collect();
    match candidates.len() {
        0 => Err(RestError::new(
            pgrst::NO_RELATIONSHIP,
            format!("Could not find a relationship between '{}' and '{target}' in the schema cache", parent.name),
            Some(format!(
                "Searched for a foreign key relationship between '{}' and '{target}'{} in the schema '{}', but no matches were found.",
                parent.name,
                e.hint.as_ref().map(|h| format!(" using the hint '{h}'")).unwrap_or_default(),
                parent.schema
            )),
            None,
        )),
        1 => Ok(candidates.remove(0)),
        _ => {
            let hints: Vec<String> = candidates.iter().map(|(child, rel)| format!("'{}!{}'", child.name, rel.hint_name())).collect();
            Err(RestError {
                details: serde_json::Value::Array(candidates.iter().map(|(child, rel)| rel.describe(parent, child)).collect()),
                ..RestError::new(
                    pgrst::AMBIGUOUS_EMBED,
                    format!("Could not embed because more than one relationship was found for '{}' and '{target}'", parent.name),
                    None,
                    Some(&format!("Try changing '{target}' to one of the following: {}. Find the desired relationship in the 'details' key.", hints.join(", "))),
                )
            })
        }
    }
}

/// The join condition between the parent alias `p` and the child alias `c`.
pub fn join_condition(rel: &Rel, p: &str, c: &str) -> String {
    let eq = |left: &str, lcols: &[String], right: &str, rcols: &[String]| -> Vec<String> {
        lcols.iter().zip(rcols).map(|(l, r)| format!("{left}.{} = {right}.{}", ident(l), ident(r))).collect()
    };
    match rel {
        Rel::ManyToOne(fk) => eq(p, &fk.columns, c, &fk.ref_columns).join(" AND "),
        Rel::OneToMany(fk) => eq(c, &fk.columns, p, &fk.ref_columns).join(" AND "),
        Rel::ManyToMany { junction, to_parent, to_child } => {
            let jt = format!("{c}_jt");
            let mut conds = eq(&jt, &to_parent.columns, p, &to_parent.ref_columns);
            conds.extend(eq(&jt, &to_child.columns, c, &to_child.ref_columns));
            format!("EXISTS (SELECT 1 FROM {} {jt} WHERE {})", qualified(&junction.schema, &junction.name), conds.join(" AND "))
        }
        // The function takes the parent row: its rows are the related ones.
        Rel::Computed(_) => "true".to_owned(),
    }
}

/// The FROM item of the child under alias `c`: its table, or for a computed
/// relationship the function called on the parent row `p`.
pub fn from_item(rel: &Rel, child: &Table, p: &str, c: &str) -> String {
    match rel {
        Rel::Computed(f) => format!("{}({p}) {c}", qualified(&f.schema, &f.name)),
        _ => format!("{} {c}", qualified(&child.schema, &child.name)),
    }
}
