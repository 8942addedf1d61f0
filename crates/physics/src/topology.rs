//! Network topology: a petgraph graph of nodes and links, and the RTT from
//! every user region to every site as the shortest path over it. Computed
//! once per instance; and routes between sites (RTT, bottleneck bandwidth,
//! links) for migrations. Must not know about workloads or physics.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use petgraph::algo::dijkstra;
use petgraph::graph::{NodeIndex, UnGraph};
use petgraph::visit::EdgeRef;

use edgeplan_model::instance::Instance;

/// Region → site round-trip times, and routes between sites.
#[derive(Debug, Clone)]
pub struct Topology {
    /// `rtt_ms[region][site]`; `f64::INFINITY` where no path exists.
    pub rtt_ms: Vec<Vec<f64>>,
    graph: UnGraph<(), LinkData>,
    site_nodes: Vec<NodeIndex>,
}

#[derive(Debug, Clone, Copy)]
struct LinkData {
    rtt_ms: f64,
    bandwidth_gbps: f64,
    /// Index into the instance's `network.links`.
    link: usize,
}

/// The lowest-RTT path between two sites.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub rtt_ms: f64,
    /// The slowest link on the path (infinite for a site to itself).
    pub bottleneck_gbps: f64,
    /// Links on the path, as indices into `network.links`.
    pub links: Vec<usize>,
}

#[derive(Default)]
struct Graph {
    graph: UnGraph<(), LinkData>,
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
        for (link, l) in instance.network.links.iter().enumerate() {
            let (a, b) = (g.node(&l.a), g.node(&l.b));
            if l.rtt_ms.is_finite() && l.rtt_ms >= 0.0 {
                g.graph.add_edge(
                    a,
                    b,
                    LinkData {
                        rtt_ms: l.rtt_ms,
                        bandwidth_gbps: l.bandwidth_gbps,
                        link,
                    },
                );
            }
        }
        let site_nodes: Vec<NodeIndex> =
            instance.sites.iter().map(|s| g.node(s.node_id())).collect();
        let mut by_start: HashMap<NodeIndex, Vec<f64>> = HashMap::new();
        let mut rtt_ms = Vec::with_capacity(instance.regions.len());
        for r in &instance.regions {
            let start = g.node(&r.node);
            let row = by_start.entry(start).or_insert_with(|| {
                let dist = dijkstra(&g.graph, start, None, |e| e.weight().rtt_ms);
                site_nodes
                    .iter()
                    .map(|n| dist.get(n).copied().unwrap_or(f64::INFINITY))
                    .collect()
            });
            rtt_ms.push(row.clone());
        }
        Topology {
            rtt_ms,
            graph: g.graph,
            site_nodes,
        }
    }

    /// The network node a site sits on, as an index (sites on one node see
    /// the same RTTs).
    pub fn site_node(&self, site: usize) -> usize {
        self.site_nodes[site].index()
    }

    /// Routes from one site to every site (`None` where unreachable).
    pub fn routes_from(&self, site: usize) -> Vec<Option<Route>> {
        let n = self.graph.node_count();
        let mut dist = vec![f64::INFINITY; n];
        let mut via: Vec<Option<(NodeIndex, LinkData)>> = vec![None; n];
        let start = self.site_nodes[site];
        dist[start.index()] = 0.0;
        let mut heap = BinaryHeap::new();
        heap.push(Visit(0.0, start));
        while let Some(Visit(d, v)) = heap.pop() {
            if d > dist[v.index()] {
                continue;
            }
            for e in self.graph.edges(v) {
                let to = if e.source() == v {
                    e.target()
                } else {
                    e.source()
                };
                let nd = d + e.weight().rtt_ms;
                if nd < dist[to.index()] {
                    dist[to.index()] = nd;
                    via[to.index()] = Some((v, *e.weight()));
                    heap.push(Visit(nd, to));
                }
            }
        }
        self.site_nodes
            .iter()
            .map(|&target| {
                if !dist[target.index()].is_finite() {
                    return None;
                }
                let mut links = Vec::new();
                let mut bottleneck_gbps = f64::INFINITY;
                let mut at = target;
                while let Some((prev, data)) = via[at.index()] {
                    links.push(data.link);
                    bottleneck_gbps = bottleneck_gbps.min(data.bandwidth_gbps);
                    at = prev;
                }
                links.reverse();
                Some(Route {
                    rtt_ms: dist[target.index()],
                    bottleneck_gbps,
                    links,
                })
            })
            .collect()
    }
}

/// A heap entry ordered by smallest distance first.
struct Visit(f64, NodeIndex);

impl PartialEq for Visit {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Visit {}
impl PartialOrd for Visit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Visit {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}
