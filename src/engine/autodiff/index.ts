export * from './adamw';
export * from './flat-params';
export * from './gradients';
export * from './train-step';
export * from './trainer';
