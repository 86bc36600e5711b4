import pytest
from tests.hardening.test_schema_fuzz import fuzzed, _report  # noqa: F401
from tests.hardening.schema_support import Credentials

@pytest.mark.parametrize("n", [80])
def test_deep(fuzzed, n):
    fuzzer = fuzzed.fuzzer(n)
    fuzzer.run(fuzzed.alice)
    print(fuzzer.sent)
    print({k: sorted(v) for k, v in fuzzer.statuses.items()})
    open("/tmp/sf/deep_findings.txt", "w").write(_report(fuzzer))
    assert not fuzzer.findings, _report(fuzzer)
