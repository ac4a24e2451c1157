"""Prints the values table of helm/pushgate/README.md from values.yaml
(`# --` comments are the descriptions). check.py compares the README with it:
`python3 tests/chart/values_table.py helm/pushgate/values.yaml` regenerates it."""
import re, sys, yaml
path = sys.argv[1]
lines = open(path).read().splitlines()
desc, pending, stack = {}, [], []
for ln in lines:
    m = re.match(r'^(\s*)# -- (.*)$', ln)
    if m:
        pending = [m.group(2)]
        continue
    if pending and re.match(r'^\s*#\s?(.*)$', ln) and not re.match(r'^\s*#\s*(-|\w+:)', ln):
        pending.append(re.sub(r'^\s*#\s?', '', ln))
        continue
    m3 = re.match(r'^(\s*)([A-Za-z][A-Za-z0-9_]*):', ln)
    if m3:
        stack = stack[:len(m3.group(1)) // 2] + [m3.group(2)]
        if pending:
            desc['.'.join(stack)] = ' '.join(pending)
    pending = [] if not ln.strip().startswith('#') else pending
vals = yaml.safe_load(open(path))
LEAVES = ('resources', 'podSecurityContext', 'securityContext', 'labels', 'annotations')
rows = []
def walk(v, p):
    if isinstance(v, dict) and v and not p.endswith(LEAVES):
        for k, x in v.items():
            walk(x, f"{p}.{k}" if p else k)
    else:
        shown = yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix('\n...').removesuffix('...').strip()
        rows.append(f"| `{p}` | `{shown}` | {desc.get(p, '')} |".replace(' |  |', ' | |'))
walk(vals, '')
print("| Key | Default | Description |\n|---|---|---|")
print('\n'.join(rows))
