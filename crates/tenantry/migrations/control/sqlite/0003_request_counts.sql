-- Requests per tenant per UTC day, for the daily quota and usage reports.
-- Written in batches by the server, not once per request.
CREATE TABLE request_counts (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    day TEXT NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day)
);
