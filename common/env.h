// Every environment variable cohort reads is declared here, once, with a typed accessor
// (NCCL_PARAM's idea). Code never calls getenv() directly.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cohort::env {

// An environment given as a map, which the accessors read instead of the process's (the
// launcher's planner reads one, so that its tests pass plain maps in).
using Map = std::map<std::string, std::string>;

// One declared variable. Accessors throw InvalidArgument, naming the variable, when a set value
// does not parse; an unset or empty variable yields the default.
class Var {
 public:
  constexpr Var(const char* name, const char* doc) : name_(name), doc_(doc) {}

  const char* name() const { return name_; }
  const char* doc() const { return doc_; }

  // The raw value, or nullopt when unset or empty. Every accessor reads `from` when given, else
  // the process environment.
  std::optional<std::string> Get(const Map* from = nullptr) const;
  bool IsSet(const Map* from = nullptr) const { return Get(from).has_value(); }

  std::string Str(const std::string& fallback, const Map* from = nullptr) const;
  int64_t Int(int64_t fallback, const Map* from = nullptr) const;
  // Accepts 1/0, true/false, yes/no, on/off (any case).
  bool Bool(bool fallback, const Map* from = nullptr) const;
  // A duration in seconds; fractions allowed ("0.5").
  double Seconds(double fallback, const Map* from = nullptr) const;

 private:
  const char* name_;
  const char* doc_;
};

// The env contract the launcher gives every worker (../shared/DESIGN.md).
inline constexpr Var kRank{"COHORT_RANK", "global rank of this worker"};
inline constexpr Var kWorldSize{"COHORT_WORLD_SIZE", "number of worker processes"};
inline constexpr Var kLocalRank{"COHORT_LOCAL_RANK", "rank of this worker on its node"};
inline constexpr Var kLocalWorldSize{"COHORT_LOCAL_WORLD_SIZE", "workers on this node"};
inline constexpr Var kNodeRank{"COHORT_NODE_RANK", "rank of this node"};
inline constexpr Var kNNodes{"COHORT_NNODES", "number of nodes"};
inline constexpr Var kStore{"COHORT_STORE", "host:port of the rendezvous store"};
inline constexpr Var kToken{"COHORT_TOKEN", "shared secret every store call carries"};
inline constexpr Var kInsecureStore{
    "COHORT_INSECURE_STORE",
    "1: rank 0 may host a store on every interface without COHORT_TOKEN (MASTER_ADDR)"};
inline constexpr Var kRunId{"COHORT_RUN_ID", "the job's id"};
inline constexpr Var kRestart{"COHORT_RESTART", "0 on the first attempt, +1 per restart"};
inline constexpr Var kBackend{"COHORT_BACKEND", "auto, nccl, mpi, gloo or ps"};
inline constexpr Var kCheckpointUri{"COHORT_CHECKPOINT_URI", "where snapshots go"};
inline constexpr Var kResume{"COHORT_RESUME", "latest, a snapshot URI, or empty"};
inline constexpr Var kCheckpointEvery{"COHORT_CHECKPOINT_EVERY",
                                      "steps between snapshots (0: only at the end and on stop)"};
inline constexpr Var kCheckpointKeep{"COHORT_CHECKPOINT_KEEP",
                                     "complete snapshots to keep, newest first (3; 0 keeps all)"};

// Launcher inputs (flags override them; Kubernetes manifests set them).
inline constexpr Var kNprocPerNode{"COHORT_NPROC_PER_NODE",
                                   "workers to start on this node, or auto"};
inline constexpr Var kRdzvEndpoint{"COHORT_RDZV_ENDPOINT",
                                   "host:port of node 0's launcher, which hosts the store"};
inline constexpr Var kRdzvUser{"COHORT_RDZV_USER",
                               "etcd user of --rdzv-backend etcd (etcd's v3 auth), with the next"};
inline constexpr Var kRdzvPassword{"COHORT_RDZV_PASSWORD", "that etcd user's password"};
inline constexpr Var kMaxRestarts{"COHORT_MAX_RESTARTS", "group restarts before giving up (0)"};
inline constexpr Var kHeartbeatTimeout{
    "COHORT_HEARTBEAT_TIMEOUT", "seconds without a worker heartbeat before it counts as hung"};
inline constexpr Var kTerminationLog{
    "COHORT_TERMINATION_LOG",
    "file the launcher overwrites with its one-line verdict at the end (default: Kubernetes' "
    "/dev/termination-log when it is writable)"};
inline constexpr Var kMetricsPort{
    "COHORT_METRICS_PORT",
    "Prometheus /metrics: each worker serves port + local rank, the launcher port - 1"};

// Behaviour knobs.
inline constexpr Var kLogLevel{"COHORT_LOG_LEVEL", "trace, debug, info, warn, error or off"};
inline constexpr Var kLogSubsys{"COHORT_LOG_SUBSYS",
                                "comma list of subsystems to log (store,coll,gloo,mpi,nccl,...)"
                                " or all; ^name excludes"};
inline constexpr Var kTimeout{"COHORT_TIMEOUT", "default collective timeout, seconds (300)"};
inline constexpr Var kStoreTimeout{"COHORT_STORE_TIMEOUT",
                                   "how long to retry reaching the store, seconds (60)"};
inline constexpr Var kHeartbeat{"COHORT_HEARTBEAT_INTERVAL",
                                "seconds between a rank's health reports to the store (0.5)"};
inline constexpr Var kDebugCollectives{
    "COHORT_DEBUG_COLLECTIVES",
    "1: before each collective, check that all ranks call the same op with the same size"};
inline constexpr Var kMallocTune{
    "COHORT_MALLOC_TUNE",
    "1 (default): training processes (ProcessGroup::FromEnv, the MPI backend) keep freed memory "
    "in the heap (mallopt M_MMAP_MAX=0, trim past 1 GiB), so tensors and MPI buffers allocated "
    "per step do not page-fault again every step; 0: glibc defaults"};
inline constexpr Var kShm{
    "COHORT_SHM",
    "1 (default): when every rank is on one host, all-reduce through shared memory instead of "
    "the backend's transport (gloo); 0: always through the transport"};
inline constexpr Var kHier{
    "COHORT_HIER",
    "1 (default): when the ranks span several hosts and some host has several, all-reduce "
    "hierarchically (shared memory on each host, one leader per host over the transport; gloo); "
    "0: flat over the transport"};
inline constexpr Var kHierHost{"COHORT_HIER_HOST",
                               "tests: the host key ranks are grouped by (default: hostname, "
                               "boot id and /dev/shm)"};
inline constexpr Var kGlooHost{"COHORT_GLOO_HOST",
                               "address Gloo's TCP transport binds and advertises (hostname)"};
inline constexpr Var kPsServers{
    "COHORT_PS_SERVERS",
    "host:port,... of the parameter servers (backend ps), in shard order (`cohort launch "
    "--ps-servers N` sets it)"};
inline constexpr Var kPsPartitionBytes{
    "COHORT_PS_PARTITION_BYTES",
    "backend ps: tensors are cut into partitions of this many bytes, spread over the servers "
    "(4 MiB); the same on every rank"};
inline constexpr Var kPsLogEvery{
    "COHORT_PS_LOG_EVERY",
    "ps-server, asynchronous mode: one log line per partition every this many steps of the "
    "slowest worker (clocks, the largest lead a worker took, waits) (1000; 0: none)"};
inline constexpr Var kRegister{
    "COHORT_REGISTER", "at the end of training, register the model under this name (rank 0)"};
inline constexpr Var kModelRepo{
    "COHORT_MODEL_REPO", "the Triton model repository COHORT_REGISTER writes: file:// or s3://"};
inline constexpr Var kTimeline{
    "COHORT_TIMELINE",
    "write a Chrome trace (chrome://tracing, Perfetto) of every rank's steps, all-reduces and "
    "checkpoint phases to this file (rank 0 writes it at the end of each Fit)"};
inline constexpr Var kProgress{
    "COHORT_PROGRESS",
    "the Trainer's progress line on rank 0: auto (in place on a terminal, plain lines otherwise "
    "and under mpirun), tty, plain or off"};

// S3-compatible object storage for checkpoints (checkpoint/store/). COHORT_S3_* take precedence
// over the AWS_* names every AWS tool reads.
inline constexpr Var kS3Endpoint{
    "COHORT_S3_ENDPOINT", "S3 endpoint URL, e.g. http://127.0.0.1:9000 (over AWS_ENDPOINT_URL)"};
inline constexpr Var kS3Region{"COHORT_S3_REGION", "S3 signing region (over AWS_REGION)"};
inline constexpr Var kS3AccessKeyId{"COHORT_S3_ACCESS_KEY_ID",
                                    "S3 key id (over AWS_ACCESS_KEY_ID)"};
inline constexpr Var kS3SecretAccessKey{"COHORT_S3_SECRET_ACCESS_KEY",
                                        "S3 secret key (over AWS_SECRET_ACCESS_KEY)"};
inline constexpr Var kS3SessionToken{"COHORT_S3_SESSION_TOKEN",
                                     "S3 session token (over AWS_SESSION_TOKEN)"};
inline constexpr Var kS3PartSize{"COHORT_S3_PART_SIZE",
                                 "bytes per multipart part; larger objects go multipart (8 MiB)"};
inline constexpr Var kS3ParallelParts{"COHORT_S3_PARALLEL_PARTS",
                                      "parts of one object uploaded at once (4)"};
inline constexpr Var kS3MaxAttempts{"COHORT_S3_MAX_ATTEMPTS",
                                    "tries per S3 request on 5xx, 429, timeouts (6)"};
inline constexpr Var kS3ConnectTimeout{"COHORT_S3_CONNECT_TIMEOUT",
                                       "seconds to connect to the S3 endpoint (10)"};
inline constexpr Var kS3StallTimeout{"COHORT_S3_STALL_TIMEOUT",
                                     "seconds an S3 transfer may make no progress (60)"};
inline constexpr Var kAwsEndpointUrl{"AWS_ENDPOINT_URL", "AWS tools: endpoint URL"};
inline constexpr Var kAwsRegion{"AWS_REGION", "AWS tools: region"};
inline constexpr Var kAwsDefaultRegion{"AWS_DEFAULT_REGION", "AWS tools: region (fallback)"};
inline constexpr Var kAwsAccessKeyId{"AWS_ACCESS_KEY_ID", "AWS tools: access key id"};
inline constexpr Var kAwsSecretAccessKey{"AWS_SECRET_ACCESS_KEY", "AWS tools: secret key"};
inline constexpr Var kAwsSessionToken{"AWS_SESSION_TOKEN", "AWS tools: session token"};

// MLflow tracking (tracking/): MLflow's own names, as its clients read them.
inline constexpr Var kMlflowTrackingUri{"MLFLOW_TRACKING_URI",
                                        "MLflow tracking server, http(s)://host:port[/prefix]"};
inline constexpr Var kMlflowExperimentName{"MLFLOW_EXPERIMENT_NAME",
                                           "MLflow experiment of the run (created if absent)"};
inline constexpr Var kMlflowRunId{"MLFLOW_RUN_ID", "MLflow run to continue instead of a new one"};
inline constexpr Var kMlflowTrackingToken{"MLFLOW_TRACKING_TOKEN", "MLflow bearer token"};
inline constexpr Var kMlflowTrackingUsername{"MLFLOW_TRACKING_USERNAME",
                                             "MLflow basic-auth user"};
inline constexpr Var kMlflowTrackingPassword{"MLFLOW_TRACKING_PASSWORD",
                                             "MLflow basic-auth password"};

// torchrun-compatible aliases.
inline constexpr Var kTorchRank{"RANK", "torchrun: global rank (PyTorchJob: node rank)"};
inline constexpr Var kTorchWorldSize{"WORLD_SIZE", "torchrun: number of processes"};
inline constexpr Var kTorchLocalRank{"LOCAL_RANK", "torchrun: local rank"};
inline constexpr Var kTorchLocalWorldSize{"LOCAL_WORLD_SIZE", "torchrun: local world size"};
inline constexpr Var kMasterAddr{"MASTER_ADDR", "torchrun: host of rank 0's store"};
inline constexpr Var kMasterPort{"MASTER_PORT", "torchrun: port of rank 0's store"};

// The Kubernetes API, for cohort-operator: what every pod gets, and kubectl's kubeconfig.
inline constexpr Var kKubernetesServiceHost{"KUBERNETES_SERVICE_HOST",
                                            "in a pod: the API server's address"};
inline constexpr Var kKubernetesServicePort{"KUBERNETES_SERVICE_PORT",
                                            "in a pod: the API server's port (443)"};
inline constexpr Var kKubeconfig{"KUBECONFIG",
                                 "cohort-operator: the kubeconfig when --kubeconfig is not given"};

// Sources the world is derived from when COHORT_* is absent.
inline constexpr Var kOmpiRank{"OMPI_COMM_WORLD_RANK", "Open MPI: rank"};
inline constexpr Var kOmpiSize{"OMPI_COMM_WORLD_SIZE", "Open MPI: size"};
inline constexpr Var kOmpiLocalRank{"OMPI_COMM_WORLD_LOCAL_RANK", "Open MPI: local rank"};
inline constexpr Var kOmpiLocalSize{"OMPI_COMM_WORLD_LOCAL_SIZE", "Open MPI: local size"};
inline constexpr Var kOmpiJobId{"OMPI_MCA_ess_base_jobid", "Open MPI: the mpirun job's id"};
inline constexpr Var kJobCompletionIndex{"JOB_COMPLETION_INDEX", "Kubernetes Indexed Job index"};
inline constexpr Var kPetNprocPerNode{"PET_NPROC_PER_NODE", "PyTorchJob: processes per node"};
inline constexpr Var kPetNNodes{"PET_NNODES", "PyTorchJob: number of nodes"};
inline constexpr Var kSlurmProcId{"SLURM_PROCID", "Slurm: global rank"};
inline constexpr Var kSlurmNTasks{"SLURM_NTASKS", "Slurm: number of tasks"};
inline constexpr Var kSlurmLocalId{"SLURM_LOCALID", "Slurm: local rank"};
inline constexpr Var kSlurmNodeId{"SLURM_NODEID", "Slurm: node rank"};
inline constexpr Var kSlurmNNodes{"SLURM_NNODES", "Slurm: number of nodes"};
inline constexpr Var kSlurmJobNodelist{"SLURM_JOB_NODELIST",
                                       "Slurm: the job's nodes (the first hosts the rendezvous)"};

// Every variable above, for --help and documentation.
const std::vector<const Var*>& All();

// A copy of the process environment (every variable, also the undeclared ones a worker inherits).
Map Snapshot();

}  // namespace cohort::env
