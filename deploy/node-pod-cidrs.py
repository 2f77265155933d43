"""Print this node's pod CIDRs (spec.podCIDRs) from the API server, with the pod's service account."""

import json
import ssl
import sys
import urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

with open(f"{ACCOUNT}/token", encoding="utf-8") as f:
    token = f.read().strip()
request = urllib.request.Request(f"https://kubernetes.default.svc/api/v1/nodes/{sys.argv[1]}",
                                 headers={"Authorization": f"Bearer {token}"})
context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
with urllib.request.urlopen(request, context=context, timeout=30) as response:
    spec = json.load(response).get("spec", {})
print(" ".join(spec.get("podCIDRs") or [spec.get("podCIDR", "")]).strip())
