//! Shortest RTTs over the instance's links: textbook Dijkstra on an
//! adjacency list, written here so that it shares nothing with the
//! topology the problem builder uses.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(PartialEq)]
pub(crate) struct Item(f64, usize);
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}

/// Shortest RTT from one node to every node (textbook Dijkstra on an adjacency list).
pub(crate) fn rtt_from(adj: &[Vec<(usize, f64)>], from: usize) -> Vec<f64> {
    let mut dist = vec![f64::INFINITY; adj.len()];
    let mut heap = BinaryHeap::new();
    dist[from] = 0.0;
    heap.push(Item(0.0, from));
    while let Some(Item(d, v)) = heap.pop() {
        if d > dist[v] {
            continue;
        }
        for &(to, w) in &adj[v] {
            if d + w < dist[to] {
                dist[to] = d + w;
                heap.push(Item(d + w, to));
            }
        }
    }
    dist
}
