//! What the kubelet reports of a pull that failed: a container waiting with `ErrImagePull` or
//! `ImagePullBackOff` in the pod's status, with the runtime's error as the message.

use k8s_openapi::api::core::v1::Pod;

/// The waiting reasons of a failed pull.
const PULL_FAILURES: [&str; 2] = ["ErrImagePull", "ImagePullBackOff"];

/// A container (init containers included) waiting on a failed pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullWait<'a> {
    pub container: &'a str,
    pub image: &'a str,
    pub reason: &'a str,
    /// The runtime's error, when the kubelet gave one.
    pub message: Option<&'a str>,
}

/// The containers of `pod` waiting on a failed pull, init containers first.
pub fn pull_waits(pod: &Pod) -> Vec<PullWait<'_>> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            PULL_FAILURES.contains(&reason).then(|| PullWait {
                container: &c.name,
                image: &c.image,
                reason,
                message: waiting.message.as_deref().filter(|m| !m.is_empty()),
            })
        })
        .collect()
}
