import { type ApplicationConfig, provideBrowserGlobalErrorListeners, provideZonelessChangeDetection } from '@angular/core';
import { provideFlowsync } from '@flowsync/client/angular';

/** With auth on, the page takes its token as `?token=`. */
const token = new URLSearchParams(location.search).get('token') ?? undefined;

export const appConfig: ApplicationConfig = {
  providers: [
    provideBrowserGlobalErrorListeners(),
    provideZonelessChangeDetection(),
    provideFlowsync({ baseUrl: '', token }),
  ],
};
