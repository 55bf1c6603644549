// Direct gRPC read: WorkflowService/GetWorkflow on the planner over mTLS, no edge in between.
//
// Env (set by loadtests/bench.py; defaults suit a hand-run against `af up`):
//   AF_PLANNER_ADDR  host:port of the planner        (default 127.0.0.1:50051)
//   AF_CERT_DIR      directory with ca.pem, client.pem, client-key.pem (default .agentflow/certs)
//   AF_WORKFLOW      workflow resource name           (default workflows/demo)
//   AF_TENANT        x-af-tenant metadata             (default default)
//   AF_TOKEN         optional bearer token, sent as `authorization` metadata: needed when
//                    AF_PLANNER_ADDR points at the gateway's gRPC pass-through instead of the planner
//   VUS, DURATION    k6 load shape                    (default 32, 15s)
//
// Paths are relative to the repository root: run `k6 run loadtests/grpc_read.js` from there.
import grpc from 'k6/net/grpc';
import { check } from 'k6';

const ADDR = __ENV.AF_PLANNER_ADDR || '127.0.0.1:50051';
const CERTS = __ENV.AF_CERT_DIR || '.agentflow/certs';
const NAME = __ENV.AF_WORKFLOW || 'workflows/demo';
const TENANT = __ENV.AF_TENANT || 'default';
const METADATA = { 'x-af-tenant': TENANT };
if (__ENV.AF_TOKEN) {
  METADATA.authorization = `Bearer ${__ENV.AF_TOKEN}`;
}

// open() resolves relative paths against the script's folder; make them absolute from the repo root.
function fromRoot(path) {
  return path.startsWith('/') ? path : `../${path}`;
}

const TLS = {
  cacerts: [open(fromRoot(`${CERTS}/ca.pem`))],
  cert: open(fromRoot(`${CERTS}/client.pem`)),
  key: open(fromRoot(`${CERTS}/client-key.pem`)),
};

const client = new grpc.Client();
client.load(['../protos', '../third_party/googleapis'], 'agentflow/workflows/v1/workflows.proto');

export const options = {
  vus: Number(__ENV.VUS || 32),
  duration: __ENV.DURATION || '15s',
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  thresholds: {
    // The bench fails a run above 1% errors; the threshold makes a hand-run say so too.
    checks: ['rate>0.99'],
  },
};

let connected = false;

export default function () {
  if (!connected) {
    // One connection per VU, kept for the whole run (as a real client would).
    client.connect(ADDR, { tls: TLS, timeout: '10s' });
    connected = true;
  }
  const response = client.invoke(
    'agentflow.workflows.v1.WorkflowService/GetWorkflow',
    { name: NAME },
    { metadata: METADATA, timeout: '10s' },
  );
  check(response, {
    'status is OK': (r) => r && r.status === grpc.StatusOK,
    'workflow returned': (r) => r && r.message && r.message.name === NAME,
  });
}

export function teardown() {
  client.close();
}
