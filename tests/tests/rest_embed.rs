//! Issue 7: resource embedding — many-to-one (object), one-to-many (array),
//! many-to-many through a junction, hints, !inner, filters / order / limit on
//! embedded resources, nesting — and RLS applying inside embeds.

use pgstack_gateway::config::Secret;
use pgstack_gateway::keys;
use pgstack_shared::Role;
use pgstack_tests::{Gateway, TestCluster, JWT_SECRET};
use reqwest::StatusCode;
use serde_json::{json, Value};

const FIXTURE: &str = r#"
CREATE TABLE public.customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.orders (
    id int PRIMARY KEY,
    customer_id int REFERENCES public.customers (id),
    total numeric(10,2)
);
CREATE TABLE public.products (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.order_items (
    id int PRIMARY KEY,
    order_id int NOT NULL REFERENCES public.orders (id),
    product_id int NOT NULL REFERENCES public.products (id),
    qty int NOT NULL
);
CREATE TABLE public.posts (id int PRIMARY KEY, title text);
CREATE TABLE public.tags (id int PRIMARY KEY, label text);
CREATE TABLE public.post_tags (post_id int REFERENCES public.posts, tag_id int REFERENCES public.tags, PRIMARY KEY (post_id, tag_id));
CREATE TABLE public.messages (
    id int PRIMARY KEY,
    sender_id int CONSTRAINT messages_sender_fkey REFERENCES public.customers (id),
    receiver_id int CONSTRAINT messages_receiver_fkey REFERENCES public.customers (id),
    body text
);
CREATE TABLE public.secrets (id int PRIMARY KEY, customer_id int REFERENCES public.customers (id), note text);
ALTER TABLE public.secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY only_service ON public.secrets FOR SELECT USING (auth.role() = 'service_role');
GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon, service_role;

INSERT INTO public.customers VALUES (1, 'Ada'), (2, 'Bob'), (3, 'Cy');
INSERT INTO public.orders VALUES (10, 1, 100), (11, 1, 50), (12, 2, 75), (13, NULL, 5);
INSERT INTO public.products VALUES (100, 'Pen'), (101, 'Ink'), (102, 'Pad');
INSERT INTO public.order_items VALUES (1, 10, 100, 2), (2, 10, 101, 1), (3, 11, 102, 5), (4, 12, 100, 1);
INSERT INTO public.posts VALUES (1, 'Hello'), (2, 'Bye');
INSERT INTO public.tags VALUES (1, 'news'), (2, 'fun'), (3, 'misc');
INSERT INTO public.post_tags VALUES (1, 1), (1, 2), (2, 2);
INSERT INTO public.messages VALUES (1, 1, 2, 'hi Bob');
INSERT INTO public.secrets VALUES (1, 1, 'ada secret');
CREATE TABLE public.sites (site_id int PRIMARY KEY, name text);
CREATE TABLE public.projects (project_id int PRIMARY KEY, name text, main_site_id int CONSTRAINT main_site REFERENCES public.sites);
CREATE TABLE public.jobs (site_id int REFERENCES public.sites, project_id int REFERENCES public.projects, PRIMARY KEY (site_id, project_id));
CREATE VIEW public.current_jobs AS SELECT * FROM public.jobs;
INSERT INTO public.sites VALUES (1, 'north'), (2, 'south');
INSERT INTO public.projects VALUES (1, 'p1', 1), (2, 'p2', NULL);
INSERT INTO public.jobs VALUES (1, 1), (2, 1);
GRANT SELECT ON public.sites, public.projects, public.jobs, public.current_jobs TO anon;
CREATE FUNCTION public.big_orders(public.customers) RETURNS SETOF public.orders LANGUAGE sql STABLE
    AS $$ SELECT * FROM public.orders WHERE customer_id = $1.id AND total >= 60 $$;
CREATE FUNCTION public.customers_named(prefix text) RETURNS SETOF public.customers LANGUAGE sql STABLE
    AS $$ SELECT * FROM public.customers WHERE name LIKE prefix || '%' $$;
"#;

async fn setup() -> (TestCluster, Gateway, String, String) {
    let tc = TestCluster::start().await.unwrap();
    tc.superuser().await.unwrap().batch_execute(FIXTURE).await.unwrap();
    let s = Secret::new(JWT_SECRET);
    let (anon, service) = (keys::mint(Role::Anon, &s).unwrap(), keys::mint(Role::ServiceRole, &s).unwrap());
    let gw = Gateway::serve(&tc, &[]).await.unwrap();
    (tc, gw, anon, service)
}

async fn get(gw: &Gateway, key: &str, path: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new().get(gw.url(&format!("/rest/v1{path}"))).header("apikey", key).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn embeds_in_every_direction() {
    let (_tc, gw, anon, _service) = setup().await;
    let ok = |v: (StatusCode, Value)| {
        assert_eq!(v.0, StatusCode::OK, "{}", v.1);
        v.1
    };

    // many-to-one → object (or null)
    let v = ok(get(&gw, &anon, "/orders?select=id,customers(name)&order=id").await);
    assert_eq!(
        v,
        json!([
            {"id": 10, "customers": {"name": "Ada"}}, {"id": 11, "customers": {"name": "Ada"}},
            {"id": 12, "customers": {"name": "Bob"}}, {"id": 13, "customers": null}
        ])
    );
    // one-to-many → array, with alias, embedded filter, order and limit
    let v = ok(get(&gw, &anon, "/customers?select=name,purchases:orders(id,total)&purchases.order=id.desc&purchases.limit=1&order=id").await);
    assert_eq!(
        v,
        json!([
            {"name": "Ada", "purchases": [{"id": 11, "total": 50.00}]},
            {"name": "Bob", "purchases": [{"id": 12, "total": 75.00}]},
            {"name": "Cy", "purchases": []}
        ])
    );
    let v = ok(get(&gw, &anon, "/customers?select=name,orders(id)&orders.total=gt.60&order=id").await);
    assert_eq!(v[0], json!({"name": "Ada", "orders": [{"id": 10}]}));
    assert_eq!(v[2], json!({"name": "Cy", "orders": []}));
    // !inner keeps only parents with a match
    let v = ok(get(&gw, &anon, "/customers?select=name,orders!inner(id)&orders.total=gt.60&order=id").await);
    assert_eq!(v, json!([{"name": "Ada", "orders": [{"id": 10}]}, {"name": "Bob", "orders": [{"id": 12}]}]));
    // many-to-many through post_tags
    let v = ok(get(&gw, &anon, "/posts?select=title,tags(label)&tags.order=label&order=id").await);
    assert_eq!(
        v,
        json!([
            {"title": "Hello", "tags": [{"label": "fun"}, {"label": "news"}]},
            {"title": "Bye", "tags": [{"label": "fun"}]}
        ])
    );
    let v = ok(get(&gw, &anon, "/tags?select=label,posts(title)&order=id").await);
    assert_eq!(v[2], json!({"label": "misc", "posts": []}));
    // nesting two levels: order → items → product
    let v = ok(get(&gw, &anon, "/orders?select=id,customers(name),order_items(qty,products(name))&order_items.order=id&id=eq.10").await);
    assert_eq!(
        v,
        json!([{"id": 10, "customers": {"name": "Ada"},
        "order_items": [{"qty": 2, "products": {"name": "Pen"}}, {"qty": 1, "products": {"name": "Ink"}}]}])
    );
    // filters on the parent still work beside embeds; * inside an embed
    let v = ok(get(&gw, &anon, "/orders?select=*,customers(*)&customer_id=eq.2").await);
    assert_eq!(v, json!([{"id": 12, "customer_id": 2, "total": 75.00, "customers": {"id": 2, "name": "Bob"}}]));
}

#[tokio::test]
async fn hints_resolve_ambiguity_and_errors_are_clear() {
    let (_tc, gw, anon, _) = setup().await;
    let (st, e) = get(&gw, &anon, "/messages?select=body,customers(name)").await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::MULTIPLE_CHOICES, Some("PGRST201")));
    assert_eq!(e["details"].as_array().unwrap().len(), 2);
    let (st, v) = get(&gw, &anon, "/messages?select=body,from:customers!messages_sender_fkey(name),to:customers!receiver_id(name)").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!([{"body": "hi Bob", "from": {"name": "Ada"}, "to": {"name": "Bob"}}]));
    let (st, e) = get(&gw, &anon, "/products?select=name,posts(title)").await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST200")));
    let (st, e) = get(&gw, &anon, "/orders?select=id,nope(id)").await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST200")));
    let (st, e) = get(&gw, &anon, "/orders?select=id,customers(nope)").await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("42703")));
}

#[tokio::test]
async fn rls_applies_inside_embeds() {
    let (_tc, gw, anon, service) = setup().await;
    let (_, v) = get(&gw, &anon, "/customers?select=name,secrets(note)&id=eq.1").await;
    assert_eq!(v, json!([{"name": "Ada", "secrets": []}]));
    let (_, v) = get(&gw, &service, "/customers?select=name,secrets(note)&id=eq.1").await;
    assert_eq!(v, json!([{"name": "Ada", "secrets": [{"note": "ada secret"}]}]));
}

/// PostgREST's related order: `order=customer(name)` sorts by a column of a to-one
/// embed (aliases, nulls placement, inside an embed's own order too); to-many embeds
/// and names that are not embedded are refused with PostgREST's codes.
#[tokio::test]
async fn related_orders_sort_by_a_to_one_embed() {
    let (_tc, gw, anon, _) = setup().await;
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect::<Vec<_>>();
    // Orders by their customer's name: Ada (10, 11), Bob (12); order 13 has none.
    let (st, v) = get(&gw, &anon, "/orders?select=id,customers(name)&order=customers(name).desc.nullslast,id").await;
    assert_eq!((st, ids(&v)), (StatusCode::OK, vec![12, 10, 11, 13]), "{v}");
    let (st, v) = get(&gw, &anon, "/orders?select=id,buyer:customers(name)&order=buyer(name).nullsfirst,id.desc").await;
    assert_eq!((st, ids(&v)), (StatusCode::OK, vec![13, 11, 10, 12]), "{v}");
    assert_eq!(v[1]["buyer"], json!({"name": "Ada"}));
    // Inside an embed: a customer's order lines by product name.
    let (st, v) = get(&gw, &anon, "/orders?select=id,order_items(id,products(name))&order_items.order=products(name)&id=eq.10").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v[0]["order_items"], json!([{"id": 2, "products": {"name": "Ink"}}, {"id": 1, "products": {"name": "Pen"}}]));

    let (st, v) = get(&gw, &anon, "/customers?select=id,orders(id)&order=orders(id)").await;
    assert_eq!((st, &v["code"], &v["message"]), (StatusCode::BAD_REQUEST, &json!("PGRST118"), &json!("A related order on 'orders' is not possible")), "{v}");
    assert_eq!(v["details"], "'customers' and 'orders' do not form a many-to-one or one-to-one relationship");
    let (st, v) = get(&gw, &anon, "/orders?select=id,customers(name)&order=clients(name)").await;
    assert_eq!((st, &v["code"], &v["hint"]), (StatusCode::BAD_REQUEST, &json!("PGRST108"), &json!("Verify that 'clients' is included in the 'select' query parameter.")), "{v}");
    let (st, v) = get(&gw, &anon, "/orders?select=id,customers(name)&order=customers(nope)").await;
    assert_eq!((st, &v["code"]), (StatusCode::BAD_REQUEST, &json!("42703")), "{v}");
}

/// Issue 16: PostgREST's relationship rules — embedding by a key's constraint or
/// column name, every candidate in a PGRST201 (a junction does not lose to a direct
/// key), a view over a junction is a junction too, spread embeds, empty embeds
/// filtered with `is.null` (anti-join) / `not.is.null`, and PGRST108 for parameters
/// of a resource that is not embedded.
#[tokio::test]
async fn relationships_follow_postgrest_rules() {
    let (_tc, gw, anon, _service) = setup().await;

    // By constraint name and by the key's column: the key names the JSON field.
    let (st, v) = get(&gw, &anon, "/projects?select=name,main_site(name)&order=project_id").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "p1", "main_site": {"name": "north"}}, {"name": "p2", "main_site": null}])));
    let (st, v) = get(&gw, &anon, "/projects?select=name,main_site_id(name)&project_id=eq.1").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "p1", "main_site_id": {"name": "north"}}])));

    // Ambiguous: the direct key and both junctions (the table and the view over it).
    let (st, e) = get(&gw, &anon, "/projects?select=*,sites(*)").await;
    assert_eq!(st, StatusCode::MULTIPLE_CHOICES, "{e}");
    assert_eq!(e["details"].as_array().map(Vec::len), Some(3), "{e}");
    assert_eq!(
        e["details"][0],
        json!({"cardinality": "many-to-one", "relationship": "main_site using projects(main_site_id) and sites(site_id)", "embedding": "projects with sites"})
    );
    assert_eq!(e["details"][2]["relationship"], "jobs using jobs_project_id_fkey(project_id) and jobs_site_id_fkey(site_id)");
    assert_eq!(
        e["hint"],
        "Try changing 'sites' to one of the following: 'sites!main_site', 'sites!current_jobs', 'sites!jobs'. Find the desired relationship in the 'details' key."
    );
    let (st, v) = get(&gw, &anon, "/projects?select=name,sites!jobs(name)&project_id=eq.1").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "p1", "sites": [{"name": "north"}, {"name": "south"}]}])));
    // An unknown hint: PostgREST's details.
    let (st, e) = get(&gw, &anon, "/projects?select=*,sites!nope(*)").await;
    assert_eq!(
        (st, &e["details"]),
        (
            StatusCode::BAD_REQUEST,
            &json!("Searched for a foreign key relationship between 'projects' and 'sites' using the hint 'nope' in the schema 'public', but no matches were found.")
        )
    );

    // Spread: to-one columns join the row; to-many become arrays.
    let (st, v) = get(&gw, &anon, "/orders?select=id,...customers(customer:name)&order=id&limit=2").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"id": 10, "customer": "Ada"}, {"id": 11, "customer": "Ada"}])));
    let (st, v) = get(&gw, &anon, "/customers?select=name,...orders(total)&id=eq.1&orders.order=id").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "Ada", "total": [100.00, 50.00]}])));

    // Empty embeds filtered: customers without orders, then with.
    let (st, v) = get(&gw, &anon, "/customers?select=name,orders()&orders=is.null").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "Cy"}])));
    let (st, v) = get(&gw, &anon, "/customers?select=name,orders()&orders=not.is.null&order=id").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "Ada"}, {"name": "Bob"}])));
    // ... with the embed's own filter: customers with an order over 60.
    let (st, v) = get(&gw, &anon, "/customers?select=name,orders()&orders.total=gt.60&orders=not.is.null&order=id").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "Ada"}, {"name": "Bob"}])));

    // Parameters of a resource that is not embedded.
    let (st, e) = get(&gw, &anon, "/customers?select=*&orders.id=eq.1").await;
    assert_eq!((st, e["code"].as_str(), e["message"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST108"), Some("'orders' is not an embedded resource in this request")));
}

/// Computed relationships (a function of the parent's row type returning the child's
/// rows) and embedding from a function's results (rows of a table's type).
#[tokio::test]
async fn computed_relationships_and_embeds_from_function_results() {
    let (_tc, gw, anon, _service) = setup().await;
    let (st, v) = get(&gw, &anon, "/customers?select=name,big_orders(id)&order=id").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "Ada", "big_orders": [{"id": 10}]}, {"name": "Bob", "big_orders": [{"id": 12}]}, {"name": "Cy", "big_orders": []}])));
    let (st, v) = get(&gw, &anon, "/rpc/customers_named?prefix=A&select=name,orders(id)&orders.order=id").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "Ada", "orders": [{"id": 10}, {"id": 11}]}])));
    // Filters on the embed of a function's results, and PGRST108 there too.
    let (st, v) = get(&gw, &anon, "/rpc/customers_named?prefix=&select=name,orders()&orders=is.null").await;
    assert_eq!((st, v), (StatusCode::OK, json!([{"name": "Cy"}])));
    let (st, e) = get(&gw, &anon, "/rpc/customers_named?prefix=&select=name&orders.id=eq.1").await;
    assert_eq!((st, e["code"].as_str()), (StatusCode::BAD_REQUEST, Some("PGRST108")));
}
