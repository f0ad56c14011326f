// A server component: it renders the client component, which shows `connecting` in the
// server HTML and goes live after hydration. The realtime URL is read per request, so one
// build runs against any server: HOLDFAST_URL=http://127.0.0.1:8080/realtime next start
import Deployment from './deployment';

export const dynamic = 'force-dynamic';

export default function Page() {
  const url = process.env.HOLDFAST_URL || '/realtime';
  return (
    <main>
      <h1>Deployments</h1>
      <Deployment url={url} topic="demo" />
    </main>
  );
}
