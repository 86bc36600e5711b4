import dataclasses
from tests.hardening.test_schema_fuzz import fuzzed, _report, _alices  # noqa: F401
from tests.hardening.schema_support import Credentials

def test_deep(fuzzed):
    out = []
    runs = [
        (fuzzed.alice, 100, True),
        (Credentials("forged", {"Authorization": "Bearer omi_x", "api-key": "omi_ik_x", "api_key": "y"}, valid=False), 20, True),
        (dataclasses.replace(fuzzed.bob, untouchable=_alices, secrets=tuple(fuzzed.alice_memories)), 40, True),
    ]
    for creds, n, cov in runs:
        fuzzer = fuzzed.fuzzer()
        fuzzer.run(creds, n, coverage=cov)
        out.append(f"== {creds.name} sent {sum(fuzzer.sent.values())}\n{ {k: sorted(v) for k, v in fuzzer.statuses.items()} }\n{_report(fuzzer)}")
    with open("/tmp/sf/deep_findings.txt", "w") as f:
        f.write("\n\n".join(out))
