'use client';

import { useState } from 'react';
import { useHoldfast, useHoldfastEvent } from 'holdfast/react';

export default function Deployment({ url, topic }) {
  const hf = useHoldfast({ url, params: { topic } });
  const [deployment, setDeployment] = useState(null);
  const [percent, setPercent] = useState(0);
  const [lines, setLines] = useState([]);

  useHoldfastEvent(hf, 'status', (d) => {
    setDeployment(d);
    setPercent(d.progress);
    if (d.status === 'queued') setLines([]);
  });
  useHoldfastEvent(hf, 'progress', (d) => setPercent(d.percent));
  useHoldfastEvent(hf, 'log', (d) => setLines((l) => [...l.slice(-19), d.line]));

  return (
    <section>
      <p>
        <span id="status" data-status={hf.status}>{hf.status}</span>
        {hf.transport ? <> via <b id="transport">{hf.transport}</b></> : null}
      </p>
      <p id="deployment">
        {deployment ? `${deployment.deploymentId}: ${deployment.status}` : 'waiting for events…'}
      </p>
      <progress id="progress" max={100} value={percent} style={{ width: 320 }} />{' '}
      <span id="percent">{percent}</span>%
      <pre id="log" style={{ background: '#111', color: '#eee', padding: 12, minHeight: 80 }}>
        {lines.join('\n')}
      </pre>
    </section>
  );
}
