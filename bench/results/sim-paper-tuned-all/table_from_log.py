"""The table of compare.md from run.log (the killed run's per-run lines):
    python table_from_log.py run.log"""
import re, sys, statistics as st, json, ast
log = open(sys.argv[1]).read().splitlines()
runs, trials = {}, {}
pat = re.compile(r"^\[\s*\d+/\d+\] (\S+)\s+seed (\d+)\s+([\d.]+)s\s+AUC ([\d.]+)\s+teacher (\S+)\s+pred ([\d.]+) \(label ([\d.]+)\)\s+ECE ([\d.]+)\s+MCE ([\d.]+)\s+\|p-true\| ([\d.]+)\s+ECE\(true\) ([\d.]+)")
tpat = re.compile(r"^\s+\[tuning (\S+)\] (?:setup|distillation) trial \d+ (\{.*\}): validation student_auc ([\d.]+)")
for line in log:
    m = pat.match(line)
    if m:
        runs.setdefault(m.group(1), []).append(m.groups()[1:])
    t = tpat.match(line)
    if t:
        trials.setdefault(t.group(1), []).append((float(t.group(3)), ast.literal_eval(t.group(2))))
def ms(xs, d=4):
    xs = [float(x) for x in xs if x != "-"]
    if not xs: return "-"
    return f"{st.mean(xs):.{d}f} ± {st.stdev(xs):.{d}f}" if len(xs) > 1 else f"{xs[0]:.{d}f}"
print("| strategy | AUC | teacher AUC | pred avg | ECE | MCE | mean abs(p − true CVR) | ECE vs true CVR | chosen on validation (best trial) | seeds |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for name, rs in runs.items():
    cols = list(zip(*rs))
    best = max(trials.get(name, []), key=lambda t: t[0], default=None)
    print(f"| {name} | {ms(cols[2])} | {ms(cols[3])} | {ms(cols[4])} | {ms(cols[6])} | {ms(cols[7])} | {ms(cols[8])} | {ms(cols[9])} | {json.dumps(best[1], sort_keys=True) if best else '-'} | {len(rs)} |")
