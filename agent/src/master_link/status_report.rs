//! Status reports: the pod workers send [`StatusReport`]s on an mpsc
//! channel, and one task sends them with `Nodes.UpdatePodStatus`, or, for
//! a pod being deleted that is torn down here, with
//! `Nodes.ConfirmPodDeletion` (which removes it). Only the newest word on a
//! pod matters, so a report waiting to be sent is replaced by a newer one.
//! A report that fails for want of a master (one is down, an election is
//! on) is sent again, to the next master, after a backoff; one refused for
//! good (the pod is gone, replaced, or bound elsewhere) is dropped. Nothing
//! else would resend it: the pod watch may well stay up through a leader's
//! death.

use std::collections::HashMap;

use skiff_proto::node::nodes_client::NodesClient;
use skiff_proto::node::{ConfirmPodDeletionRequest, UpdatePodStatusRequest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::masters::Masters;
use super::reconnect::Reconnect;
use super::StatusReport;

/// Sends the newest status of each pod until `shutdown` or until every
/// sender of `reports` is dropped.
pub async fn status_loop(
    masters: Masters,
    reports: mpsc::UnboundedReceiver<StatusReport>,
    shutdown: CancellationToken,
) {
    report_statuses(masters, reports, |_| {}, shutdown).await
}

/// [`status_loop`], calling `taken` with each report a master took (hollow
/// nodes count them).
pub async fn report_statuses(
    masters: Masters,
    mut reports: mpsc::UnboundedReceiver<StatusReport>,
    mut taken: impl FnMut(&StatusReport) + Send,
    shutdown: CancellationToken,
) {
    let mut pending: HashMap<String, StatusReport> = HashMap::new();
    let mut i = 0;
    let mut client = masters.client(i);
    let mut backoff = Reconnect::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = reports.recv() => match r {
                    Some(r) => { pending.insert(r.uid.clone(), r); }
                    None => return,
                },
            }
        }
        while let Ok(r) = reports.try_recv() {
            pending.insert(r.uid.clone(), r);
        }
        let uids: Vec<String> = pending.keys().cloned().collect();
        let mut failed = false;
        for uid in uids {
            let Some(report) = pending.get(&uid).cloned() else {
                continue;
            };
            let Some(c) = client.as_mut() else {
                // Not a usable address: on to the next master.
                failed = true;
                break;
            };
            match send(c, &report).await {
                Ok(_) => {
                    taken(&report);
                    pending.remove(&uid);
                }
                // The pod is gone (or replaced, or, for a confirmation, not
                // being deleted); its status no longer matters.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::NotFound
                            | tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                    ) =>
                {
                    tracing::debug!(pod = %report.name, error = %s, "dropping status report");
                    pending.remove(&uid);
                }
                // No longer this node's pod (bound elsewhere): retrying
                // would only hold up the reports behind it.
                Err(s) if s.code() == tonic::Code::PermissionDenied => {
                    tracing::warn!(pod = %report.name, error = %s, "status report refused; dropping it");
                    pending.remove(&uid);
                }
                Err(s) => {
                    tracing::debug!(error = %s, "status report failed");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            i += 1;
            client = masters.client(i);
            if !backoff.wait(&shutdown).await {
                return;
            }
        } else {
            backoff.reset();
        }
    }
}

/// Sends one report: the pod's status, or the confirmation that it is
/// torn down.
async fn send(
    client: &mut NodesClient<Channel>,
    report: &StatusReport,
) -> Result<(), tonic::Status> {
    if report.torn_down {
        let request = ConfirmPodDeletionRequest {
            namespace: report.namespace.clone(),
            name: report.name.clone(),
            uid: report.uid.clone(),
        };
        client.confirm_pod_deletion(request).await?;
    } else {
        let request = UpdatePodStatusRequest {
            namespace: report.namespace.clone(),
            name: report.name.clone(),
            status: Some(report.status.clone()),
            uid: report.uid.clone(),
        };
        client.update_pod_status(request).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use skiff_proto::v1;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;
    use tonic::Status;

    use super::{report_statuses, status_loop};
    use crate::master_link::fake_master::{within, TestPki};
    use crate::master_link::StatusReport;

    fn report(name: &str, phase: &str) -> StatusReport {
        StatusReport {
            uid: format!("uid-{name}"),
            namespace: "default".to_owned(),
            name: name.to_owned(),
            status: v1::PodStatus {
                phase: phase.to_owned(),
                ..v1::PodStatus::default()
            },
            torn_down: false,
        }
    }

    #[tokio::test]
    async fn a_report_that_fails_is_sent_again_until_a_master_takes_it() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let electing = Status::unavailable("electing a leader");
        let refusals = [electing.clone(), electing];
        master.with(|s| s.status_refusals.extend(refusals));
        let told = Arc::new(Mutex::new(Vec::new()));
        let taken_by_master = told.clone();
        let shutdown = CancellationToken::new();
        let (reports, rx) = mpsc::unbounded_channel();
        let link = tokio::spawn(report_statuses(
            pki.masters(&[&master]),
            rx,
            move |r: &StatusReport| taken_by_master.lock().unwrap().push(r.uid.clone()),
            shutdown.clone(),
        ));
        reports.send(report("a", "Running")).unwrap();
        let taken = master.status_taken(0).await;
        assert_eq!(
            (
                taken.uid.as_str(),
                taken.namespace.as_str(),
                taken.name.as_str()
            ),
            ("uid-a", "default", "a")
        );
        let phase = taken.status.as_ref().map(|s| s.phase.as_str());
        assert_eq!(phase, Some("Running"));
        let attempts = master.with(|s| s.status_attempts.len());
        assert_eq!(attempts, 3, "two refused, the third taken");
        // The master has it; the link hears so once the answer arrives.
        tokio::time::timeout(Duration::from_secs(10), async {
            while told.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the link heard the master take the report");
        assert_eq!(*told.lock().unwrap(), ["uid-a"]);
        shutdown.cancel();
        within("the status loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn a_report_for_a_pod_that_is_gone_is_dropped_not_retried() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let gone = Status::not_found("no such pod");
        master.with(|s| s.status_refusals.push_back(gone));
        let shutdown = CancellationToken::new();
        let (reports, rx) = mpsc::unbounded_channel();
        let link = tokio::spawn(status_loop(pki.masters(&[&master]), rx, shutdown.clone()));
        reports.send(report("a", "Running")).unwrap();
        master.status_attempt(0).await;
        reports.send(report("b", "Running")).unwrap();
        master.status_taken(0).await;
        // Longer than the pause before a retry would be.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let attempts = master.with(|s| s.status_attempts.clone());
        let sent: Vec<&str> = attempts.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(sent, ["a", "b"], "the report for a gone pod was sent again");
        shutdown.cancel();
        within("the status loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn a_newer_status_replaces_one_waiting_to_be_sent_again() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let no_leader = Status::unavailable("no leader");
        let refusals = [no_leader.clone(), no_leader];
        master.with(|s| s.status_refusals.extend(refusals));
        let shutdown = CancellationToken::new();
        let (reports, rx) = mpsc::unbounded_channel();
        let link = tokio::spawn(status_loop(pki.masters(&[&master]), rx, shutdown.clone()));
        reports.send(report("a", "Pending")).unwrap();
        master.status_attempt(0).await;
        // Sent while the loop backs off from the refusals.
        reports.send(report("a", "Running")).unwrap();
        master.status_taken(0).await;
        let taken = master.with(|s| s.statuses_taken.clone());
        assert_eq!(
            taken.len(),
            1,
            "the older status was sent after the newer one"
        );
        let phase = taken[0].status.as_ref().map(|s| s.phase.as_str());
        assert_eq!(phase, Some("Running"));
        shutdown.cancel();
        within("the status loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn a_torn_down_pod_is_confirmed_instead_of_reported_and_replaces_its_status() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        // No master at first: both reports wait, and the confirmation
        // replaces the status.
        let no_leader = Status::unavailable("no leader");
        master.with(|s| s.status_refusals.push_back(no_leader));
        let shutdown = CancellationToken::new();
        let (reports, rx) = mpsc::unbounded_channel();
        let link = tokio::spawn(status_loop(pki.masters(&[&master]), rx, shutdown.clone()));
        reports.send(report("a", "Running")).unwrap();
        master.status_attempt(0).await;
        let torn_down = StatusReport {
            torn_down: true,
            ..report("a", "Running")
        };
        reports.send(torn_down).unwrap();
        let confirmed = master.deletion_confirmed(0).await;
        assert_eq!(
            (confirmed.namespace.as_str(), confirmed.name.as_str()),
            ("default", "a")
        );
        assert_eq!(confirmed.uid, "uid-a", "only the pod torn down");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let attempts = master.with(|s| s.status_attempts.len());
        assert_eq!(attempts, 1, "no status sent after the confirmation");
        assert_eq!(master.with(|s| s.deletions_confirmed.len()), 1);
        shutdown.cancel();
        within("the status loop to stop", link).await.unwrap();
    }

    #[tokio::test]
    async fn dropping_every_sender_ends_the_status_loop() {
        let pki = TestPki::new("pi-1");
        let master = pki.serve().await;
        let shutdown = CancellationToken::new();
        let (reports, rx) = mpsc::unbounded_channel::<StatusReport>();
        let link = tokio::spawn(status_loop(pki.masters(&[&master]), rx, shutdown.clone()));
        tokio::task::yield_now().await;
        assert!(!link.is_finished());
        drop(reports);
        within("the status loop to end", link).await.unwrap();
        assert!(!shutdown.is_cancelled());
    }
}
