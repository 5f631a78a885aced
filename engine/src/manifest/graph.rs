//! The DAG of pipelines.
//!
//! A pipeline depends on its `build` pipeline and on every pipeline a `tree`
//! input of one of its stages refers to. Edges run from the dependency to the
//! dependent, so a topological order is a build order.

use super::{Origin, Pipeline};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graphmap::DiGraphMap;
use std::collections::{BTreeSet, HashMap};

/// The pipelines `p` depends on, by name, sorted and unique.
pub fn dependencies(p: &Pipeline) -> BTreeSet<&str> {
    let mut deps: BTreeSet<&str> = p.build_name().into_iter().collect();
    deps.extend(p.image.as_deref());
    for stage in &p.stages {
        for input in stage.inputs.values() {
            if input.origin == Origin::Pipeline {
                deps.extend(input.references.iter().filter_map(|r| r.pipeline()));
            }
        }
    }
    deps
}

fn build_graph(pipelines: &[Pipeline]) -> DiGraphMap<usize, ()> {
    let index: HashMap<&str, usize> = pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut g = DiGraphMap::new();
    for (i, p) in pipelines.iter().enumerate() {
        g.add_node(i);
        for dep in dependencies(p) {
            if let Some(&d) = index.get(dep) {
                g.add_edge(d, i, ());
            }
        }
    }
    g
}

/// Pipeline indices in an order that builds every dependency first (manifest
/// order among independent ones), or the names along a cycle.
pub fn order(pipelines: &[Pipeline]) -> Result<Vec<usize>, Vec<String>> {
    let g = build_graph(pipelines);
    match toposort(&g, None) {
        Ok(_) => Ok(stable_order(&g, pipelines.len())),
        Err(_) => Err(find_cycle(&g, pipelines)),
    }
}

/// Kahn's algorithm taking the lowest ready index each time, so that the order
/// is predictable and follows the manifest where it can.
fn stable_order(g: &DiGraphMap<usize, ()>, n: usize) -> Vec<usize> {
    let mut indegree: Vec<usize> = (0..n)
        .map(|i| g.neighbors_directed(i, petgraph::Incoming).count())
        .collect();
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        out.push(i);
        for next in g.neighbors_directed(i, petgraph::Outgoing) {
            indegree[next] -= 1;
            if indegree[next] == 0 {
                ready.insert(next);
            }
        }
    }
    out
}

fn find_cycle(g: &DiGraphMap<usize, ()>, pipelines: &[Pipeline]) -> Vec<String> {
    let scc = tarjan_scc(g)
        .into_iter()
        .find(|c| c.len() > 1 || g.contains_edge(c[0], c[0]))
        .expect("toposort failed, so a cycle exists");
    // Walk the cycle inside the component, starting from its first pipeline.
    let members: BTreeSet<usize> = scc.iter().copied().collect();
    let start = *members.first().expect("non-empty");
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let next = g
            .neighbors_directed(cur, petgraph::Outgoing)
            .filter(|n| members.contains(n))
            .min()
            .expect("every member of a cycle has a successor in it");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            path.drain(..pos);
            path.push(next);
            break;
        }
        path.push(next);
        cur = next;
    }
    path.into_iter()
        .map(|i| pipelines[i].name.clone())
        .collect()
}
