//! The agent's Service rules changed in place, against the kernel: in a
//! network namespace of its own, a table of 60 Service ports of every
//! kind (nodePorts, load balancer and external addresses, both traffic
//! policies, internal Local, ClientIP affinity, none or several
//! endpoints) is built whole, then taken through 40 random changes (a
//! Service's endpoints, its exposure, one gone, one new, one pod behind a
//! Service with affinity replaced), each made with
//! `nftables::service_changes`, the chains and sets it emptied deleted by
//! the next (every other step, a change with nothing else in it). Then the
//! kernel's table (`nft -j list table`) must be exactly the table built
//! whole from the same Services, which is put in place for the next
//! change. No change deletes a chain it stops pointing to (refused before
//! Linux 6.2). And a pod replaced behind a Service with affinity: its
//! successor takes its chain and timed set, which forgets the old pod's
//! clients while the other endpoint's keeps its own.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use skiff_agent::network::nftables::{self, DnsRedirect, Exposure, ServiceRule, TableScope};
use skiff_e2e::e2e_prerequisites;

fn scope() -> TableScope {
    TableScope {
        cluster: "10.42.0.0/16".parse().unwrap(),
        services: "10.43.0.0/16".parse().unwrap(),
        local: "10.42.3.0/24".parse().unwrap(),
        dns: Some(DnsRedirect {
            cluster_dns: Ipv4Addr::new(10, 43, 0, 10),
            listener: Ipv4Addr::new(10, 42, 3, 1),
        }),
    }
}

/// Service port `i` as `rng` draws it.
fn service(i: u8, rng: &mut impl Rng) -> ServiceRule {
    // Now and then more endpoints than the agent picks among with rules
    // (a map instead), so that a change also crosses between the two.
    let count = if rng.random_bool(0.15) {
        rng.random_range(9..12u8)
    } else {
        rng.random_range(0..4u8)
    };
    let endpoints = (0..count)
        .map(|j| {
            (
                Ipv4Addr::new(10, 42, 3 + rng.random_range(0..2u8), 10 + j),
                8080,
            )
        })
        .collect();
    let exposed = rng.random_bool(0.5);
    ServiceRule {
        cluster_ip: Ipv4Addr::new(10, 43, 1, i),
        protocol: if i % 3 == 0 { "udp" } else { "tcp" },
        port: 80,
        endpoints,
        exposure: Exposure {
            node_port: exposed.then(|| 30000 + u16::from(i)),
            load_balancer_ips: if exposed && rng.random_bool(0.5) {
                vec![Ipv4Addr::new(192, 168, 1, 2)]
            } else {
                vec![]
            },
            external_ips: if rng.random_bool(0.2) {
                vec![Ipv4Addr::new(192, 168, 1, rng.random_range(3..6))]
            } else {
                vec![]
            },
            local_only: exposed && rng.random_bool(0.3),
            source_ranges: if rng.random_bool(0.2) {
                vec!["192.168.0.0/16".parse().unwrap()]
            } else {
                vec![]
            },
            affinity_seconds: rng.random_bool(0.2).then_some(60),
            internal_local: rng.random_bool(0.15),
        },
    }
}

fn nft(args: &[&str], input: Option<&Value>) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft")?;
    let mut stdin = child.stdin.take().context("nft's stdin")?;
    if let Some(input) = input {
        stdin.write_all(input.to_string().as_bytes())?;
    }
    drop(stdin);
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn apply(batch: &Value) -> anyhow::Result<()> {
    nft(&["-j", "-f", "-"], Some(batch)).map(|_| ())
}

/// The table as the kernel holds it, without handles and in an order of
/// its own: each chain with its rules in order, each set and map with
/// its elements sorted.
fn listed() -> anyhow::Result<BTreeMap<String, String>> {
    let text = nft(&["-j", "list", "table", "ip", nftables::TABLE], None)?;
    let listing: Value = serde_json::from_str(&text)?;
    let mut objects: BTreeMap<String, String> = BTreeMap::new();
    for item in listing["nftables"].as_array().context("a listing")? {
        let mut item = item.clone();
        for kind in ["table", "chain", "rule", "set", "map"] {
            if let Some(object) = item.get_mut(kind).and_then(Value::as_object_mut) {
                object.remove("handle");
                if let Some(elements) = object.get_mut("elem").and_then(Value::as_array_mut) {
                    elements.sort_by_key(|e| e.to_string());
                }
            }
        }
        let key = if let Some(rule) = item.get("rule") {
            let chain = rule["chain"].as_str().unwrap_or_default();
            let rules_before = objects
                .keys()
                .filter(|k| k.starts_with(&format!("rule {chain} #")))
                .count();
            format!("rule {chain} #{rules_before:04}")
        } else if let Some((kind, object)) = ["chain", "set", "map", "table"]
            .iter()
            .find_map(|kind| item.get(*kind).map(|o| (kind, o)))
        {
            format!("{kind} {}", object["name"].as_str().unwrap_or_default())
        } else {
            continue;
        };
        objects.insert(key, item.to_string());
    }
    Ok(objects)
}

/// What differs between two listings, for the failure message.
fn difference(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(6)
        .map(|k| {
            format!(
                "{k}:\n  in place: {:?}\n  built whole: {:?}",
                a.get(k),
                b.get(k)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn service_changes_leave_the_table_the_agent_would_build_whole() -> anyhow::Result<()> {
    if !e2e_prerequisites(&["nft"]) {
        return Ok(());
    }
    // A thread in a network namespace of its own: nft, started from it,
    // works there, and the namespace goes with the thread.
    std::thread::spawn(|| -> anyhow::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unsharing a network namespace")?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let mut services: Vec<ServiceRule> = (1..=60).map(|i| service(i, &mut rng)).collect();
        services.sort();
        apply(&nftables::ruleset(scope(), &[], &services))?;
        let mut leftovers = nftables::Leftovers::default();
        for step in 0..40 {
            let mut next = services.clone();
            let at = rng.random_range(0..next.len());
            // A pod replaced behind a Service with affinity, when one has
            // endpoints: its other endpoints' chains and sets are kept.
            let sticky: Vec<usize> = (0..next.len())
                .filter(|j| {
                    next[*j].exposure.affinity_seconds.is_some() && !next[*j].endpoints.is_empty()
                })
                .collect();
            match step % 4 {
                1 if !sticky.is_empty() => {
                    let at = sticky[rng.random_range(0..sticky.len())];
                    let endpoints = &mut next[at].endpoints;
                    let gone = rng.random_range(0..endpoints.len());
                    endpoints.remove(gone);
                    endpoints.push((Ipv4Addr::new(10, 42, 5, 100 + step), 8080));
                    endpoints.sort();
                }
                0 | 1 => {
                    let i = next[at].cluster_ip.octets()[3];
                    next[at] = service(i, &mut rng);
                }
                2 => {
                    next.remove(at);
                }
                _ => {
                    let free = (61..=250u8)
                        .find(|i| !next.iter().any(|s| s.cluster_ip.octets()[3] == *i))
                        .context("a free address")?;
                    next.push(service(free, &mut rng));
                }
            }
            next.sort();
            nftables::keep_endpoint_places(&services, &mut next);
            let changes = nftables::service_changes(scope(), &services, &next, &leftovers)
                .context("a change to make in place")?;
            let commands = &changes.commands;
            apply(commands).with_context(|| format!("step {step}: {commands}"))?;
            if step % 2 == 0 {
                // What it emptied goes with the next change.
                leftovers = changes.leftovers;
                services = next;
                continue;
            }
            // Here, a change with nothing else in it deletes it.
            let cleanup = nftables::service_changes(scope(), &next, &next, &changes.leftovers)
                .context("a clean-up to make in place")?;
            apply(&cleanup.commands).with_context(|| format!("step {step}: clean-up"))?;
            anyhow::ensure!(
                cleanup.leftovers.is_empty(),
                "a clean-up left {:?}",
                cleanup.leftovers
            );
            leftovers = nftables::Leftovers::default();
            let in_place = listed()?;
            apply(&nftables::ruleset(scope(), &[], &next))?;
            let whole = listed()?;
            anyhow::ensure!(
                in_place == whole,
                "step {step}: the table changed in place is not the one built whole:\n{}",
                difference(&in_place, &whole)
            );
            services = next;
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the test's thread panicked"))?
}

/// The clients an affinity set holds, as the kernel lists them.
fn clients(set: &str) -> anyhow::Result<Vec<String>> {
    let text = nft(&["-j", "list", "set", "ip", nftables::TABLE, set], None)?;
    let listing: Value = serde_json::from_str(&text)?;
    let mut found = Vec::new();
    for item in listing["nftables"].as_array().context("a listing")? {
        for element in item["set"]["elem"].as_array().into_iter().flatten() {
            // A timed element is listed as {"elem": {"val": ..., ...}}.
            let value = element["elem"]["val"].as_str().or(element.as_str());
            found.extend(value.map(str::to_owned));
        }
    }
    Ok(found)
}

#[test]
fn a_replaced_endpoint_takes_its_places_chain_and_set_without_the_old_clients() -> anyhow::Result<()>
{
    if !e2e_prerequisites(&["nft"]) {
        return Ok(());
    }
    std::thread::spawn(|| -> anyhow::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unsharing a network namespace")?;
        let endpoint = |last: u8| (Ipv4Addr::new(10, 42, 3, last), 8080);
        let service = |endpoints: Vec<(Ipv4Addr, u16)>| ServiceRule {
            cluster_ip: Ipv4Addr::new(10, 43, 1, 1),
            protocol: "tcp",
            port: 80,
            endpoints,
            exposure: Exposure {
                affinity_seconds: Some(600),
                ..Exposure::default()
            },
        };
        let held = vec![service(vec![endpoint(10), endpoint(20)])];
        apply(&nftables::ruleset(scope(), &[], &held)).context("building the table")?;
        let set = |place: usize| format!("svc-10.43.1.1-tcp-80-ep{place}-affinity-600");
        // A client each endpoint has had, as the rules would record them.
        for (place, client) in [(0, "10.42.9.1"), (1, "10.42.9.2")] {
            nft(
                &[
                    "add",
                    "element",
                    "ip",
                    nftables::TABLE,
                    &set(place),
                    &format!("{{ {client} }}"),
                ],
                None,
            )?;
        }
        let before = listed()?;
        // The pod at 10 replaced by one at 30 (sorted first, as the
        // agent's rules come).
        let mut wanted = vec![service(vec![endpoint(20), endpoint(30)])];
        nftables::keep_endpoint_places(&held, &mut wanted);
        assert_eq!(wanted[0].endpoints, [endpoint(30), endpoint(20)]);
        let changes =
            nftables::service_changes(scope(), &held, &wanted, &nftables::Leftovers::default())
                .context("a change to make in place")?;
        let commands = &changes.commands;
        apply(commands).with_context(|| format!("the change: {commands}"))?;
        anyhow::ensure!(
            changes.leftovers.is_empty(),
            "left over: {:?}",
            changes.leftovers
        );
        let after = listed()?;
        let names = |l: &BTreeMap<String, String>| -> BTreeSet<String> {
            l.keys()
                .filter(|k| k.starts_with("chain ") || k.starts_with("set "))
                .cloned()
                .collect()
        };
        anyhow::ensure!(
            names(&before) == names(&after),
            "chains or sets made or gone: {:?} -> {:?}",
            names(&before),
            names(&after)
        );
        anyhow::ensure!(
            clients(&set(0))?.is_empty(),
            "the replaced endpoint's client is still in its place's set: {:?}",
            clients(&set(0))?
        );
        anyhow::ensure!(
            clients(&set(1))? == ["10.42.9.2"],
            "the kept endpoint lost its client: {:?}",
            clients(&set(1))?
        );
        let chain = nft(
            &[
                "list",
                "chain",
                "ip",
                nftables::TABLE,
                "svc-10.43.1.1-tcp-80-ep0",
            ],
            None,
        )?;
        anyhow::ensure!(
            chain.contains("10.42.3.30:8080") && !chain.contains("10.42.3.10"),
            "the place's chain does not lead to the new endpoint:\n{chain}"
        );
        // The whole table built from the same rules is the same (with
        // the kept client, which only traffic puts there).
        nft(&["flush", "set", "ip", nftables::TABLE, &set(1)], None)?;
        let in_place = listed()?;
        apply(&nftables::ruleset(scope(), &[], &wanted)).context("building the table again")?;
        let whole = listed()?;
        anyhow::ensure!(
            in_place == whole,
            "the table changed in place is not the one built whole:\n{}",
            difference(&in_place, &whole)
        );
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the test's thread panicked"))?
}

#[test]
fn the_agents_session_writes_through_libnftables_in_its_namespace_unloads_it_when_idle_and_a_refused_batch_changes_nothing(
) -> anyhow::Result<()> {
    if !e2e_prerequisites(&["nft"]) {
        return Ok(());
    }
    std::thread::spawn(|| -> anyhow::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("unsharing a network namespace")?;
        let idle = std::time::Duration::from_millis(300);
        let session = nftables::Nftables::open_unloading_after(idle, None);
        let loaded = || -> anyhow::Result<bool> {
            Ok(std::fs::read_to_string("/proc/self/maps")?.contains("libnftables.so"))
        };
        anyhow::ensure!(!loaded()?, "libnftables is loaded before any change");
        anyhow::ensure!(
            session.uses_library(),
            "libnftables.so.1 cannot be loaded: install libnftables1"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let services = vec![service(1, &mut rand::rngs::StdRng::seed_from_u64(1))];
        runtime.block_on(session.apply(&nftables::ruleset(scope(), &[], &services)))?;
        // Here, in this thread's namespace: what nft lists is the table.
        let built = listed()?;
        apply(&nftables::ruleset(scope(), &[], &services))?;
        anyhow::ensure!(
            built == listed()?,
            "the session's table is not the one nft builds"
        );
        // A batch whose last command the kernel refuses: nothing of it
        // stays, and the error says what was refused.
        let refused = serde_json::json!({"nftables": [
            {"add": {"chain": {"family": "ip", "table": nftables::TABLE, "name": "half"}}},
            {"add": {"rule": {"family": "ip", "table": nftables::TABLE, "chain": "no-such-chain", "expr": [{"accept": null}]}}},
        ]});
        let error = runtime
            .block_on(session.apply(&refused))
            .expect_err("a rule in a missing chain is refused");
        anyhow::ensure!(
            error.to_string().contains("No such file or directory"),
            "the error does not say why: {error}"
        );
        anyhow::ensure!(built == listed()?, "a refused batch left part of itself");
        // Loaded for the changes, unloaded once idle; loaded again for the
        // next.
        anyhow::ensure!(loaded()?, "libnftables is not what applied the batches");
        std::thread::sleep(idle * 4);
        anyhow::ensure!(!loaded()?, "libnftables is still loaded after {idle:?} idle");
        let mut next = services.clone();
        next[0].endpoints = vec![(Ipv4Addr::new(10, 42, 3, 77), 8080)];
        let changes = nftables::service_changes(scope(), &services, &next, &nftables::Leftovers::default())
            .context("a change to make in place")?;
        runtime.block_on(session.apply(&changes.commands))?;
        anyhow::ensure!(loaded()?, "libnftables did not come back for the change");
        anyhow::ensure!(
            nft(&["list", "table", "ip", nftables::TABLE], None)?.contains("10.42.3.77"),
            "the change after the library was loaded again is not in the table"
        );
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the test's thread panicked"))?
}
