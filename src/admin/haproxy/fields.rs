//! HAProxy's description of each `show stat` column — its tags (origin, nature, scope),
//! value type and text — for the `typed`, `json` and `desc` forms. Read off Debian's
//! haproxy 2.6 (tests/fixtures/haproxy-2.6/show_stat_typed_desc*.txt; four fields it left
//! empty there from its src/stats.c); a unit test keeps this table equal to the fixtures.

/// One column of `show stat`.
pub struct Field {
    pub name: &'static str,
    /// Tags on a frontend, a backend, a server row (they differ for a few fields).
    pub tags: [&'static str; 3],
    /// `str`, `u32`, `u64` or `s32`.
    pub kind: &'static str,
    pub desc: &'static str,
}

/// In [`super::STAT_COLUMNS`] order.
pub const FIELDS: [Field; 88] = [
    Field { name: "pxname", tags: ["KNS", "KNS", "KNS"], kind: "str", desc: "Proxy name" },
    Field { name: "svname", tags: ["KNS", "KNS", "KNS"], kind: "str", desc: "Server name" },
    Field { name: "qcur", tags: ["MGP", "MGP", "MGP"], kind: "u32", desc: "Number of current queued connections" },
    Field { name: "qmax", tags: ["MMP", "MMP", "MMP"], kind: "u32", desc: "Highest value of queued connections encountered since process started" },
    Field { name: "scur", tags: ["MGP", "MGP", "MGP"], kind: "u32", desc: "Number of current sessions on the frontend, backend or server" },
    Field { name: "smax", tags: ["MMP", "MMP", "MMP"], kind: "u32", desc: "Highest value of current sessions encountered since process started" },
    Field { name: "slim", tags: ["CLP", "CLP", "CLP"], kind: "u32", desc: "Frontend/listener/server's maxconn, backend's fullconn" },
    Field { name: "stot", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of sessions since process started" },
    Field { name: "bin", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of request bytes since process started" },
    Field { name: "bout", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of response bytes since process started" },
    Field { name: "dreq", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of denied requests since process started" },
    Field { name: "dresp", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of denied responses since process started" },
    Field { name: "ereq", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of invalid requests since process started" },
    Field { name: "econ", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of failed connections to server since the worker process started" },
    Field { name: "eresp", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of invalid responses since the worker process started" },
    Field { name: "wretr", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of server connection retries since the worker process started" },
    Field { name: "wredis", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of server redispatches due to connection failures since the worker process started" },
    Field { name: "status", tags: ["SGP", "SGP", "SGP"], kind: "str", desc: "Frontend/listen status: OPEN/WAITING/FULL/STOP; backend: UP/DOWN; server: last check status" },
    Field { name: "weight", tags: ["MaP", "MaP", "MaP"], kind: "u32", desc: "Server's effective weight, or sum of active servers' effective weights for a backend" },
    Field { name: "act", tags: ["SGP", "MGP", "SGP"], kind: "u32", desc: "Total number of active UP servers with a non-zero weight" },
    Field { name: "bck", tags: ["SGP", "MGP", "SGP"], kind: "u32", desc: "Total number of backup UP servers with a non-zero weight" },
    Field { name: "chkfail", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of failed individual health checks per server/backend, since the worker process started" },
    Field { name: "chkdown", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of failed checks causing UP to DOWN server transitions, per server/backend, since the worker process started" },
    Field { name: "lastchg", tags: ["MAP", "MAP", "MAP"], kind: "u32", desc: "How long ago the last server state changed, in seconds" },
    Field { name: "downtime", tags: ["MCP", "MCP", "MCP"], kind: "u32", desc: "Total time spent in DOWN state, for server or backend" },
    Field { name: "qlimit", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Limit on the number of connections in queue, for servers only (maxqueue argument)" },
    Field { name: "pid", tags: ["KGP", "KGP", "KGP"], kind: "u32", desc: "Relative worker process number (1)" },
    Field { name: "iid", tags: ["KGS", "KGS", "KGS"], kind: "u32", desc: "Frontend or Backend numeric identifier ('id' setting)" },
    Field { name: "sid", tags: ["KGS", "KGS", "KGS"], kind: "u32", desc: "Server numeric identifier ('id' setting)" },
    Field { name: "throttle", tags: ["MaP", "MaP", "MaP"], kind: "u32", desc: "Throttling ratio applied to a server's maxconn and weight during the slowstart period (0 to 100%)" },
    Field { name: "lbtot", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of requests routed by load balancing since the worker process started (ignores queue pop and stickiness)" },
    Field { name: "tracked", tags: ["CNS", "CNS", "CNS"], kind: "str", desc: "Name of the other server this server tracks for its state" },
    Field { name: "type", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Type of the object (Listener, Frontend, Backend, Server)" },
    Field { name: "rate", tags: ["MRP", "MGP", "MRP"], kind: "u32", desc: "Total number of sessions processed by this object over the last second (sessions for listeners/frontends, requests for backends/servers)" },
    Field { name: "rate_lim", tags: ["CLP", "CLP", "CLP"], kind: "u32", desc: "Limit on the number of sessions accepted in a second (frontend only, 'rate-limit sessions' setting)" },
    Field { name: "rate_max", tags: ["MMP", "MGP", "MMP"], kind: "u32", desc: "Highest value of sessions per second observed since the worker process started" },
    Field { name: "check_status", tags: ["MOP", "MOP", "MOP"], kind: "str", desc: "Status report of the server's latest health check, prefixed with '*' if a check is currently in progress" },
    Field { name: "check_code", tags: ["MOP", "MOP", "MOP"], kind: "u32", desc: "HTTP/SMTP/LDAP status code reported by the latest server health check" },
    Field { name: "check_duration", tags: ["MDP", "MDP", "MDP"], kind: "u64", desc: "Total duration of the latest server health check, in milliseconds" },
    Field { name: "hrsp_1xx", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP responses with status 100-199 returned by this object since the worker process started" },
    Field { name: "hrsp_2xx", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP responses with status 200-299 returned by this object since the worker process started" },
    Field { name: "hrsp_3xx", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP responses with status 300-399 returned by this object since the worker process started" },
    Field { name: "hrsp_4xx", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP responses with status 400-499 returned by this object since the worker process started" },
    Field { name: "hrsp_5xx", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP responses with status 500-599 returned by this object since the worker process started" },
    Field { name: "hrsp_other", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP responses with status <100, >599 returned by this object since the worker process started (error -1 included)" },
    Field { name: "hanafail", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of failed checks caused by an 'on-error' directive after an 'observe' condition matched" },
    Field { name: "req_rate", tags: ["MRP", "MRP", "MRP"], kind: "u32", desc: "Number of HTTP requests processed over the last second on this object" },
    Field { name: "req_rate_max", tags: ["MMP", "MMP", "MMP"], kind: "u32", desc: "Highest value of http requests observed since the worker process started" },
    Field { name: "req_tot", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP requests processed by this object since the worker process started" },
    Field { name: "cli_abrt", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of requests or connections aborted by the client since the worker process started" },
    Field { name: "srv_abrt", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of requests or connections aborted by the server since the worker process started" },
    Field { name: "comp_in", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of bytes submitted to the HTTP compressor for this object since the worker process started" },
    Field { name: "comp_out", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of bytes emitted by the HTTP compressor for this object since the worker process started" },
    Field { name: "comp_byp", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of bytes that bypassed HTTP compression for this object since the worker process started (CPU/memory/bandwidth limitation)" },
    Field { name: "comp_rsp", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP responses that were compressed for this object since the worker process started" },
    Field { name: "lastsess", tags: ["MAP", "MAP", "MAP"], kind: "s32", desc: "How long ago some traffic was seen on this object on this worker process, in seconds" },
    Field { name: "last_chk", tags: ["MOP", "MOP", "MOP"], kind: "str", desc: "Short description of the latest health check report for this server (see also check_desc)" },
    Field { name: "last_agt", tags: ["MOP", "MOP", "MOP"], kind: "str", desc: "Short description of the latest agent check report for this server (see also agent_desc)" },
    Field { name: "qtime", tags: ["MaP", "MaP", "MaP"], kind: "u32", desc: "Time spent in the queue, in milliseconds, averaged over the 1024 last requests (backend/server)" },
    Field { name: "ctime", tags: ["MaP", "MaP", "MaP"], kind: "u32", desc: "Time spent waiting for a connection to complete, in milliseconds, averaged over the 1024 last requests (backend/server)" },
    Field { name: "rtime", tags: ["MaP", "MaP", "MaP"], kind: "u32", desc: "Time spent waiting for a server response, in milliseconds, averaged over the 1024 last requests (backend/server)" },
    Field { name: "ttime", tags: ["MaP", "MaP", "MaP"], kind: "u32", desc: "Total request+response time (request+queue+connect+response+processing), in milliseconds, averaged over the 1024 last requests (backend/server)" },
    Field { name: "agent_status", tags: ["MOP", "MOP", "MOP"], kind: "str", desc: "Status report of the server's latest agent check, prefixed with '*' if a check is currently in progress" },
    Field { name: "agent_code", tags: ["MOP", "MOP", "MOP"], kind: "u32", desc: "Status code reported by the latest server agent check" },
    Field { name: "agent_duration", tags: ["MDP", "MDP", "MDP"], kind: "u64", desc: "Total duration of the latest server agent check, in milliseconds" },
    Field { name: "check_desc", tags: ["MOP", "MOP", "MOP"], kind: "str", desc: "Textual description of the latest health check report for this server" },
    Field { name: "agent_desc", tags: ["MOP", "MOP", "MOP"], kind: "str", desc: "Textual description of the latest agent check report for this server" },
    Field { name: "check_rise", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Number of successful health checks before declaring a server UP (server 'rise' setting)" },
    Field { name: "check_fall", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Number of failed health checks before declaring a server DOWN (server 'fall' setting)" },
    Field { name: "check_health", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Current server health check level (0..fall-1=DOWN, fall..rise-1=UP)" },
    Field { name: "agent_rise", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Number of successful agent checks before declaring a server UP (server 'rise' setting)" },
    Field { name: "agent_fall", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Number of failed agent checks before declaring a server DOWN (server 'fall' setting)" },
    Field { name: "agent_health", tags: ["CGS", "CGS", "CGS"], kind: "u32", desc: "Current server agent check level (0..fall-1=DOWN, fall..rise-1=UP)" },
    Field { name: "addr", tags: ["CGS", "CGS", "CGS"], kind: "str", desc: "Server's address:port, shown only if show-legends is set, or at levels oper/admin for the CLI" },
    Field { name: "cookie", tags: ["CNS", "CNS", "CNS"], kind: "str", desc: "Backend's cookie name or Server's cookie value, shown only if show-legends is set, or at levels oper/admin for the CLI" },
    Field { name: "mode", tags: ["CGS", "CGS", "CGS"], kind: "str", desc: "'mode' setting (tcp/http/health/cli)" },
    Field { name: "algo", tags: ["CGS", "CGS", "CGS"], kind: "str", desc: "Backend's load balancing algorithm, shown only if show-legends is set, or at levels oper/admin for the CLI" },
    Field { name: "conn_rate", tags: ["MRP", "MRP", "MRP"], kind: "u32", desc: "Number of new connections accepted over the last second on the frontend for this worker process" },
    Field { name: "conn_rate_max", tags: ["MMP", "MMP", "MMP"], kind: "u32", desc: "Highest value of connections per second observed since the worker process started" },
    Field { name: "conn_tot", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of new connections accepted on this frontend since the worker process started" },
    Field { name: "intercepted", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP requests intercepted on the frontend (redirects/stats/services) since the worker process started" },
    Field { name: "dcon", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of incoming connections blocked on a listener/frontend by a tcp-request connection rule since the worker process started" },
    Field { name: "dses", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of incoming sessions blocked on a listener/frontend by a tcp-request connection rule since the worker process started" },
    Field { name: "wrew", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of failed HTTP header rewrites since the worker process started" },
    Field { name: "connect", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of outgoing connection attempts on this backend/server since the worker process started" },
    Field { name: "reuse", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of reused connection on this backend/server since the worker process started" },
    Field { name: "cache_lookups", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP requests looked up in the cache on this frontend/backend since the worker process started" },
    Field { name: "cache_hits", tags: ["MCP", "MCP", "MCP"], kind: "u64", desc: "Total number of HTTP requests not found in the cache on this frontend/backend since the worker process started" },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field HAProxy described in the fixtures has here its position, tags (per
    /// object), type and text.
    #[test]
    fn the_table_is_what_haproxy_2_6_says() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/haproxy-2.6");
        let mut checked = 0;
        for file in ["show_stat_typed_desc.txt", "show_stat_typed_desc_checks.txt"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(!text.is_empty(), "{file}");
            for line in text.lines() {
                // F.2.0.4.scur.1:MGP:u32:0:"Number of …"
                let Some((head, rest)) = line.split_once(':') else {
                    continue;
                };
                let parts: Vec<&str> = head.split('.').collect();
                let (Some(obj), Some(pos), Some(name)) = (parts.first(), parts.get(3), parts.get(4)) else {
                    continue;
                };
                let Ok(pos) = pos.parse::<usize>() else { continue };
                let Some(f) = FIELDS.get(pos) else { continue };
                let k = match *obj {
                    "F" => 0,
                    "B" => 1,
                    _ => 2,
                };
                let mut r = rest.splitn(3, ':');
                let (tags, kind) = (r.next().unwrap_or(""), r.next().unwrap_or(""));
                let desc = rest.rsplit_once(":\"").map_or("", |(_, d)| d.trim_end_matches('"'));
                assert_eq!((f.name, f.tags[k], f.kind, f.desc), (*name, tags, kind, desc), "{line}");
                checked += 1;
            }
        }
        assert!(checked > 250, "{checked}");
    }
}
