//! `Op::operands` and `Op::operands_mut` are written out separately for every op; graph passes
//! (autocast) rewrite through one and analyses read the other, so they must agree. The suite has
//! a case for every op, which makes it the list to check them on.

use accelrt_conformance::cases;
use std::collections::BTreeSet;

#[test]
fn operands_and_operands_mut_agree_on_every_op_of_the_suite() {
    let mut kinds = BTreeSet::new();
    for case in cases::all() {
        for node in case.graph.nodes() {
            let mut op = node.op.clone();
            let places: Vec<_> = op.operands_mut().into_iter().map(|o| *o).collect();
            assert_eq!(places, node.op.operands(), "{}: node `{}`", case.name, node.name);
            // map_operands rewrites exactly those places, in that order.
            let shifted = node.op.map_operands(|o| accelrt_core::ValueId(o.0 + 1000));
            let expected: Vec<u32> = node.op.operands().iter().map(|o| o.0 + 1000).collect();
            assert_eq!(shifted.operands().iter().map(|o| o.0).collect::<Vec<_>>(), expected);
            kinds.insert(node.op.kind());
        }
    }
    // The suite reaches the ops with optional and variadic operands this has to get right.
    for kind in ["linear", "layer_norm", "attention", "attention_probs", "concat", "adamw_step"] {
        assert!(kinds.contains(kind), "no conformance case has a `{kind}` node: {kinds:?}");
    }
}
