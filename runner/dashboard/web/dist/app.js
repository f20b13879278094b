document.getElementById('app').textContent = 'ferrobeam dashboard (placeholder build)';
