//! Group-policy engine costs (criterion): counting a flow batch into the
//! traffic matrix, computing suggestions over a full matrix, checking a new
//! rule against 1000 rules (conflicts), and `explain` over 1000 rules.
//!
//!     cargo bench --bench policy
//!
//! Numbers in docs/PERFORMANCE.md were taken on a shared 2-core machine.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gatewarden::flow::ConnState;
use gatewarden::policy::matrix::TrafficMatrix;
use gatewarden::policy::suggest::{suggest, AlertEvidence, Feedback};
use gatewarden::policy::{
    Action, Endpoint, Group, Policy, PolicyConfig, PolicyEngine, PortRange, Protocol, Relationship,
};
use gatewarden_proto::messages::{FlowBatch, FlowRecord, Proto};

const GROUPS: usize = 16;

fn groups() -> Vec<Group> {
    (0..GROUPS)
        .map(|i| Group {
            name: format!("g{i}"),
            members: vec![format!("10.{i}.0.0/16"), format!("2001:db8:{i:x}::/48")],
            description: String::new(),
        })
        .collect()
}

fn flow(id: u64) -> FlowRecord {
    let (a, b) = ((id % GROUPS as u64) as u8, ((id / 7) % GROUPS as u64) as u8);
    FlowRecord {
        flow_id: id,
        src: format!("10.{a}.0.{}", id % 250 + 1).parse().unwrap(),
        dst: format!("10.{b}.1.{}", id % 200 + 1).parse().unwrap(),
        sport: 40_000,
        dport: [22u16, 80, 443, 1883, 8883, 53][(id % 6) as usize],
        proto: Proto::Tcp,
        first_ns: (1_000 + id) * 1_000_000_000,
        last_ns: (1_000 + id) * 1_000_000_000,
        fwd_packets: 5,
        rev_packets: 4,
        fwd_bytes: 600,
        rev_bytes: 800,
        conn_state: ConnState::SF,
        src_answered: false,
    }
}

fn policy_with_rules(n: u32) -> Policy {
    let mut p = Policy::default();
    for g in groups() {
        p.groups.insert(g.name.clone(), g);
    }
    for id in 1..=n {
        p.rules.push(Relationship {
            id,
            source_group: format!("g{}", id as usize % GROUPS),
            destination_group: format!("g{}", (id as usize / GROUPS) % GROUPS),
            protocol: Protocol::Tcp,
            port_range: PortRange::one(10_000 + id as u16),
            action: if id % 2 == 0 { Action::Allow } else { Action::Deny },
            priority: id as i32 % 50,
            comment: String::new(),
        });
    }
    p
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PolicyConfig { state_dir: dir.path().to_path_buf(), ..PolicyConfig::default() };
    let mut engine = PolicyEngine::open(&cfg).unwrap();
    for g in groups() {
        engine.add_group(g, false).unwrap();
    }
    let batch = FlowBatch {
        node: "r".into(),
        seq: 1,
        flows: (0..1000).map(flow).collect(),
        hosts: vec![],
        in_iface: String::new(),
        shed: Vec::new(),
    };
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(batch.flows.len() as u64));
    g.bench_function("observe_batch_1000_flows_16_groups", |b| {
        let mut n = 0u64;
        b.iter_batched(
            || {
                n += 1;
                let mut x = batch.clone();
                for f in &mut x.flows {
                    f.flow_id += n * 1_000_000;
                }
                x
            },
            |x| engine.observe_batch(&x),
            BatchSize::LargeInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let p = policy_with_rules(0);
    let mut m = TrafficMatrix::new(4096, 60);
    let names: Vec<String> = (0..GROUPS).map(|i| format!("g{i}")).collect();
    for id in 0..20_000u64 {
        let mut f = flow(id);
        f.dport = (id % 256) as u16 + 1;
        m.observe(
            &f,
            &names[id as usize % GROUPS..id as usize % GROUPS + 1],
            &names[(id as usize / 3) % GROUPS..(id as usize / 3) % GROUPS + 1],
        );
    }
    g.bench_function("suggest_full_matrix_4096_cells", |b| {
        b.iter(|| suggest(&p, &m, &AlertEvidence::default(), &Feedback::default(), 10))
    });
    let p = policy_with_rules(1000);
    let mut new = p.rules[0].clone();
    new.id = 0;
    new.port_range = PortRange::ANY;
    new.priority = 1_000;
    g.bench_function("check_rule_against_1000_rules", |b| b.iter(|| p.check_rule(&new)));
    let src = Endpoint::Addr("10.3.0.5".parse().unwrap());
    let dst = Endpoint::Group("g7".into());
    g.bench_function("explain_1000_rules", |b| b.iter(|| p.explain(&src, &dst, Protocol::Tcp, Some(10_100), &[])));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
