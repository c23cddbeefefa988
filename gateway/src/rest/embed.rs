//! Resource embedding: which foreign key joins a parent to an embedded resource.
//! Pure: schema cache + names → relationship. PostgREST's rules: many-to-one
//! (object), one-to-many (array), many-to-many through a junction table (array);
//! `!hint` picks among several by constraint name, column, or junction table.

use serde_json::json;

use super::error::RestError;
use super::request::Embed;
use crate::db::schema_cache::{ForeignKey, SchemaCache, Table};
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
}

impl Rel<'_> {
    /// Many-to-one and one-to-one (the child's key columns are unique) embeds are
    /// objects; the others arrays.
    pub fn is_to_one(&self) -> bool {
        match self {
            Rel::ManyToOne(_) => true,
            Rel::OneToMany(fk) => fk.unique,
            Rel::ManyToMany { .. } => false,
        }
    }

    fn matches_hint(&self, hint: &str) -> bool {
        match self {
            Rel::ManyToOne(fk) | Rel::OneToMany(fk) => fk.name == hint || fk.columns.iter().any(|c| c == hint),
            Rel::ManyToMany { junction, to_parent, to_child } => junction.name == hint || to_parent.name == hint || to_child.name == hint,
        }
    }

    fn describe(&self) -> serde_json::Value {
        match self {
            Rel::ManyToOne(fk) => json!({"cardinality": "many-to-one", "relationship": fk.name}),
            Rel::OneToMany(fk) => json!({"cardinality": "one-to-many", "relationship": fk.name}),
            Rel::ManyToMany { junction, .. } => json!({"cardinality": "many-to-many", "relationship": junction.name}),
        }
    }
}

fn key(t: &Table) -> (String, String) {
    (t.schema.clone(), t.name.clone())
}

/// Finds the embedded table and the one relationship to it.
pub fn resolve<'a>(cache: &'a SchemaCache, parent: &Table, e: &Embed) -> Result<(&'a Table, Rel<'a>), RestError> {
    let no_rel = || {
        RestError::new(
            pgrst::NO_RELATIONSHIP,
            format!("Could not find a relationship between '{}' and '{}' in the schema cache", parent.name, e.name),
            None,
            Some("check the foreign keys between the two tables, or the hint after !"),
        )
    };
    let child = cache.table(&parent.schema, &e.name).ok_or_else(no_rel)?;
    let (p, c) = (key(parent), key(child));
    let mut candidates: Vec<Rel> = Vec::new();
    for fk in &cache.foreign_keys {
        if fk.table == p && fk.ref_table == c {
            candidates.push(Rel::ManyToOne(fk));
        }
        if fk.table == c && fk.ref_table == p {
            candidates.push(Rel::OneToMany(fk));
        }
    }
    for junction in cache.tables.values().filter(|t| t.schema == parent.schema && key(t) != p && key(t) != c) {
        let j = key(junction);
        for to_parent in cache.foreign_keys.iter().filter(|f| f.table == j && f.ref_table == p) {
            for to_child in cache.foreign_keys.iter().filter(|f| f.table == j && f.ref_table == c && f.name != to_parent.name) {
                candidates.push(Rel::ManyToMany { junction, to_parent, to_child });
            }
        }
    }
    if let Some(h) = &e.hint {
        candidates.retain(|r| r.matches_hint(h));
    } else if candidates.iter().any(|r| !matches!(r, Rel::ManyToMany { .. })) {
        // Direct keys win over junctions, as in PostgREST.
        candidates.retain(|r| !matches!(r, Rel::ManyToMany { .. }));
    }
    match candidates.len() {
        0 => Err(no_rel()),
        1 => Ok((child, candidates.remove(0))),
        _ => Err(RestError {
            details: serde_json::Value::Array(candidates.iter().map(Rel::describe).collect()),
            ..RestError::new(
                pgrst::AMBIGUOUS_EMBED,
                format!("Could not embed because more than one relationship was found for '{}' and '{}'", parent.name, e.name),
                None,
                Some(&format!("Try changing '{}' to one of the relationships above, e.g. '{}!<constraint name>'", e.name, e.name)),
            )
        }),
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
    }
}
