// The same read through the REST edge: GET /v1/workflows/demo on the gateway with a bearer token.
//
// Env (set by loadtests/bench.py):
//   AF_EDGE_URL   base URL of the REST edge   (default http://127.0.0.1:8080)
//   AF_TOKEN      bearer token (required; `af` dev token or agentflow_cli.tokens.dev_token)
//   AF_WORKFLOW   workflow resource name      (default workflows/demo)
//   VUS, DURATION k6 load shape               (default 32, 15s)
import http from 'k6/http';
import { check } from 'k6';

const BASE = __ENV.AF_EDGE_URL || 'http://127.0.0.1:8080';
const NAME = __ENV.AF_WORKFLOW || 'workflows/demo';
const TOKEN = __ENV.AF_TOKEN || '';
const URL = `${BASE}/v1/${NAME}`;
const PARAMS = {
  headers: { Authorization: `Bearer ${TOKEN}` },
  tags: { name: 'GET /v1/workflows/{id}' },
};

export const options = {
  vus: Number(__ENV.VUS || 32),
  duration: __ENV.DURATION || '15s',
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  thresholds: {
    checks: ['rate>0.99'],
  },
};

export function setup() {
  if (!TOKEN) {
    throw new Error('AF_TOKEN is not set: the edge answers 401 without a bearer token');
  }
}

export default function () {
  const response = http.get(URL, PARAMS);
  check(response, {
    'status is 200': (r) => r.status === 200,
    'workflow returned': (r) => r.body && r.body.indexOf(`"name":"${NAME}"`) >= 0,
  });
}
