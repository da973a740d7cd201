use std::{net::SocketAddr, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use regcred_operator::{
    api,
    controller::settings::Settings,
    operator::{self, Election},
    runtime::http::{self, Health},
    runtime::metrics::Metrics,
    runtime::probe,
    runtime::telemetry::{self, LogFormat},
};
use tracing::{error, info};

/// Keeps registry pull secrets in sync across namespaces and ServiceAccounts.
#[derive(Parser)]
#[command(name = "regcred-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (kubeconfig: in-cluster, then KUBECONFIG / ~/.kube/config).
    Run(Box<RunArgs>),
    /// Explain why a pod cannot pull its image (also installable as the kubectl plugin
    /// `kubectl-regcred`: `kubectl regcred doctor ...`). Exit 0: the pull should work; 1: a
    /// problem was found; 2: usage error or nothing to diagnose.
    Doctor(DoctorArgs),
    /// Print the RegistryCredential CRD as YAML.
    Crd,
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The operator's own namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "regcred-system")]
    namespace: String,
    /// Namespaces that source Secrets may be read from (comma-separated); default: --namespace.
    #[arg(long, env = "REGCRED_SOURCE_NAMESPACES", value_delimiter = ',')]
    source_namespaces: Vec<String>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, env = "REGCRED_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Address of the /healthz and /readyz endpoints.
    #[arg(long, env = "REGCRED_HEALTH_ADDR", default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "REGCRED_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Namespaces written concurrently within one reconcile.
    #[arg(long, env = "REGCRED_WRITE_CONCURRENCY", default_value_t = 128)]
    write_concurrency: usize,
    /// Elect a leader on a Lease in --namespace, so that several replicas can run; only the leader
    /// writes. `--leader-election=false` for a single instance.
    #[arg(long, env = "REGCRED_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "REGCRED_LEASE_NAME", default_value = "regcred-operator")]
    lease_name: String,
    /// Seconds a leader that stopped renewing keeps the lease.
    #[arg(long, env = "REGCRED_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    /// This replica's identity in the election (default: POD_NAME or the host name, plus a suffix).
    #[arg(long, env = "REGCRED_IDENTITY")]
    identity: Option<String>,
    /// Only reconcile RegistryCredentials matching this label selector (run several instances,
    /// each with its own selector and lease, e.g. for a canary).
    #[arg(long, env = "REGCRED_SELECTOR")]
    selector: Option<String>,
    /// With `spec.podRecovery: Evict`: at most this many evictions per minute per
    /// RegistryCredential.
    #[arg(long, env = "REGCRED_MAX_EVICTIONS_PER_MINUTE", default_value_t = 10)]
    max_evictions_per_minute: u32,
    /// `spec.verify`: never send credentials to a Bearer token realm on another host than the
    /// registry (by default such a realm, like Docker Hub's auth.docker.io, is allowed and named).
    #[arg(long, env = "REGCRED_FORBID_CROSS_HOST_REALMS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    forbid_cross_host_realms: bool,
    /// The operator's own ServiceAccount (in --namespace): `source.ecr` with `webIdentity`
    /// requests tokens of it (TokenRequest) to exchange with STS.
    #[arg(
        long,
        env = "REGCRED_SERVICE_ACCOUNT",
        default_value = "regcred-operator"
    )]
    service_account: String,
    /// `source.ecr`: a token is minted again when less than half of its lifetime remains, but
    /// never sooner than this many seconds after the last mint (also the refresh interval when an
    /// endpoint answers with an expiry that is not in the future, e.g. because of clock skew).
    #[arg(long, env = "REGCRED_MIN_TOKEN_REFRESH_SECONDS", default_value_t = 300)]
    min_token_refresh_seconds: u64,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("subject").required(true).args(["pod", "image"])))]
struct DoctorArgs {
    /// The pod: `pod/<name>` or `<name>`.
    pod: Option<String>,
    /// Namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Diagnose an image before anything is deployed, as a new pod of --service-account would pull it.
    #[arg(long, conflicts_with = "pod")]
    image: Option<String>,
    /// The ServiceAccount a new pod would use (with --image).
    #[arg(long, default_value = "default", requires = "image")]
    service_account: String,
    /// Also ask the registry (`/v2/`) whether it accepts the matching credentials.
    #[arg(long)]
    check_registry: bool,
    /// PEM file of extra CAs to trust for --check-registry.
    #[arg(long, requires = "check_registry")]
    ca_file: Option<std::path::PathBuf>,
    /// With --check-registry: never send credentials to a Bearer token realm on another host than
    /// the registry.
    #[arg(long, requires = "check_registry")]
    forbid_cross_host_realms: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: DoctorOutput,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DoctorOutput {
    Text,
    Json,
}

/// Why `doctor` could not diagnose (exit 2).
#[derive(Debug, thiserror::Error)]
enum DoctorCliError {
    #[error("cannot load a Kubernetes client configuration: {0}")]
    Config(#[source] kube::config::InferConfigError),
    #[error("cannot create a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("give a pod or --image")]
    Usage,
    #[error("reading --ca-file {path}: {source}")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Checker(#[from] regcred_operator::remote::registry::CheckerError),
    #[error(transparent)]
    Diagnose(#[from] regcred_operator::doctor::DoctorError),
}

/// Why `run` stopped (exit 1).
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(
        "cannot load a Kubernetes client configuration (in-cluster, KUBECONFIG or ~/.kube/config): {0}"
    )]
    Config(#[source] kube::Error),
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    #[error("cannot listen on {flag} {addr}: {source}")]
    Listen {
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Operator(#[from] operator::OperatorError),
}

async fn doctor(args: DoctorArgs) -> Result<bool, DoctorCliError> {
    use regcred_operator::{doctor as dr, remote::registry::Checker};
    let config = kube::Config::infer()
        .await
        .map_err(DoctorCliError::Config)?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).map_err(DoctorCliError::Client)?;
    let subject = match (args.pod, args.image) {
        (Some(pod), None) => dr::Subject::Pod(
            pod.strip_prefix("pod/")
                .or(pod.strip_prefix("pods/"))
                .unwrap_or(&pod)
                .to_string(),
        ),
        (None, Some(image)) => dr::Subject::Image {
            image,
            service_account: args.service_account,
        },
        _ => return Err(DoctorCliError::Usage),
    };
    let checker = if args.check_registry {
        let ca = match &args.ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|source| DoctorCliError::CaFile {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        Some(
            Checker::new(ca.as_deref(), std::time::Duration::from_secs(10))?
                .forbid_cross_host_realms(args.forbid_cross_host_realms),
        )
    } else {
        None
    };
    let report = dr::diagnose(&client, &namespace, &subject, checker.as_ref()).await?;
    match args.output {
        DoctorOutput::Text => print!("{}", dr::render_text(&report)),
        DoctorOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serializes")
        ),
    }
    Ok(report.ok)
}

fn identity(explicit: Option<String>) -> String {
    explicit.unwrap_or_else(|| {
        let host = std::env::var("POD_NAME")
            .or_else(|_| {
                std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|_| "regcred-operator".into());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{host}_{:x}{:x}", std::process::id(), nanos)
    })
}

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", api::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Doctor(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(doctor(args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(message) => {
                    eprintln!("error: {message}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Version => {
            println!("regcred-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let args = *args;
            telemetry::init(args.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> Result<(), RunError> {
    let source_namespaces = if args.source_namespaces.is_empty() {
        vec![args.namespace.clone()]
    } else {
        args.source_namespaces
    };
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Config)?;
    probe::check(&client, &source_namespaces).await?;

    let metrics = Arc::new(Metrics::default());
    let health = Health::default();
    let (metrics_addr, metrics_server) = http::metrics_server(args.metrics_addr, metrics.clone())
        .await
        .map_err(|source| RunError::Listen {
            flag: "--metrics-addr",
            addr: args.metrics_addr,
            source,
        })?;
    let (health_addr, health_server) = http::health_server(args.health_addr, health.clone())
        .await
        .map_err(|source| RunError::Listen {
            flag: "--health-addr",
            addr: args.health_addr,
            source,
        })?;
    tokio::spawn(metrics_server);
    tokio::spawn(health_server);
    info!(%metrics_addr, %health_addr, source_namespaces = ?source_namespaces, "starting");

    let settings = Settings {
        namespace: args.namespace,
        source_namespaces,
        write_concurrency: args.write_concurrency,
        credential_selector: args.selector,
        max_evictions_per_minute: args.max_evictions_per_minute,
        forbid_cross_host_realms: args.forbid_cross_host_realms,
        service_account: args.service_account,
        min_token_refresh: std::time::Duration::from_secs(args.min_token_refresh_seconds.max(1)),
    };
    let election = args.leader_election.then(|| Election {
        lease_name: args.lease_name,
        identity: identity(args.identity),
        lease_duration: std::time::Duration::from_secs(args.lease_duration.max(2)),
    });
    Ok(operator::run(client, settings, election, metrics, health).await?)
}
