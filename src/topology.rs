//! Network topology: a petgraph graph of nodes and links, and the RTT from
//! every user region to every site as the shortest path over it. Computed
//! once per instance. Must not know about workloads or physics.

use std::collections::HashMap;

use petgraph::algo::dijkstra;
use petgraph::graph::{NodeIndex, UnGraph};

use crate::instance::Instance;

/// Region → site round-trip times.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `rtt_ms[region][site]`; `f64::INFINITY` where no path exists.
    pub rtt_ms: Vec<Vec<f64>>,
}

#[derive(Default)]
struct Graph {
    graph: UnGraph<(), f64>,
    index: HashMap<String, NodeIndex>,
}

impl Graph {
    fn node(&mut self, id: &str) -> NodeIndex {
        if let Some(&n) = self.index.get(id) {
            return n;
        }
        let n = self.graph.add_node(());
        self.index.insert(id.to_string(), n);
        n
    }
}

impl Topology {
    /// Build from an instance. Links with a negative or non-finite RTT are
    /// left out here; validation reports them.
    pub fn build(instance: &Instance) -> Topology {
        let mut g = Graph::default();
        for l in &instance.network.links {
            let (a, b) = (g.node(&l.a), g.node(&l.b));
            if l.rtt_ms.is_finite() && l.rtt_ms >= 0.0 {
                g.graph.add_edge(a, b, l.rtt_ms);
            }
        }
        let site_nodes: Vec<NodeIndex> =
            instance.sites.iter().map(|s| g.node(s.node_id())).collect();
        let mut by_start: HashMap<NodeIndex, Vec<f64>> = HashMap::new();
        let mut rtt_ms = Vec::with_capacity(instance.regions.len());
        for r in &instance.regions {
            let start = g.node(&r.node);
            let row = by_start.entry(start).or_insert_with(|| {
                let dist = dijkstra(&g.graph, start, None, |e| *e.weight());
                site_nodes
                    .iter()
                    .map(|n| dist.get(n).copied().unwrap_or(f64::INFINITY))
                    .collect()
            });
            rtt_ms.push(row.clone());
        }
        Topology { rtt_ms }
    }
}
