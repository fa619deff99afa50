"""Server-side evaluation of a finished run: `compare` (`fedkb eval`) against the
`baselines`, as token metrics and as a keyboard (`keyboard_metrics`); `audit` measures
memorization of planted canaries."""
